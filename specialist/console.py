"""Rich consoles: results on stdout, progress and logs on stderr (so --json stays clean)."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
