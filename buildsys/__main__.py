from buildsys.cli.main import main

main()
