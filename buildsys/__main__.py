from buildsys.cli.client import main

main()
