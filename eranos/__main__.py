from eranos.cli import main

main()
