from specialist.cli import main

main()
