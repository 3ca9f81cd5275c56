"""The command line: thin commands over the library; typed errors become exit codes here."""
