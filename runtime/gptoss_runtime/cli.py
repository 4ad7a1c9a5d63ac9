"""Command-line entry point of the operator (filled in by the core work)."""


def main() -> None:
    raise SystemExit("not implemented yet")
