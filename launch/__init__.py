"""Command-line entry points, run from the repository root: `python -m launch.<name>`."""
