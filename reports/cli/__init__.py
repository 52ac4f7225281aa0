"""One module per ``reports`` subcommand (each exposes ``main(argv)``)."""
