"""The `courtcast` command: one module per noun (up, users, streams, sessions, recordings,
agent, devices), assembled in `parser`; `main` is the console script."""

from courtcast.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
