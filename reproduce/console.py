"""The console every table, grid and report prints to: at least 120 columns, so tables stay readable in logs."""
from rich.console import Console

console = Console(width=max(Console().width, 120))  # no terminal (a log file): rich would assume 80
