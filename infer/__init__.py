"""Public inference surface: streaming generation, the CLI and media I/O."""
