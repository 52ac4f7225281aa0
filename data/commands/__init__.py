"""One module per ``data`` subcommand: thin argparse adapters over the library functions."""
