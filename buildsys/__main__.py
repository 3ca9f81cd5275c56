from buildsys.cli import main

main()
