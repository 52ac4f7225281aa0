"""One module per ``planner`` subcommand: parse, call the library, render."""
