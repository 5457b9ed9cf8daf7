from builder.cli.imgbuild import main

main()
