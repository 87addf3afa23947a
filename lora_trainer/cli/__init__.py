"""CLI command modules; each has `register(subparsers)`."""
