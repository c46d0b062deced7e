"""Development tooling: the private engine and the demo (never on a worker's path)."""
