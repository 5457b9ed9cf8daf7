"""The command line: click commands only, each calling one library function."""
