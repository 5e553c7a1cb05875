from pixbatch.cli import main

main()
