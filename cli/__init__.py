"""The `aj` command line, a thin layer over the library."""
