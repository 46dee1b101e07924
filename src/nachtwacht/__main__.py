from nachtwacht.cli.main import main

main()
