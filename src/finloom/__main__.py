from finloom.cli import main

main()
