"""Rich consoles: results on stdout, progress and logs on stderr (so --json stays clean)."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def announce(message: str) -> None:
    """A one-off slow step (a conversion, an export) the user waits for, on stderr."""
    err_console.print(f"[cyan]{message}[/cyan]")
