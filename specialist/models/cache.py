"""Where specialist keeps prepared models: SPECIALIST_HOME, else $XDG_CACHE_HOME/specialist,
else ~/.cache/specialist."""

from __future__ import annotations

import os
from pathlib import Path


def specialist_home() -> Path:
    if os.environ.get("SPECIALIST_HOME"):
        return Path(os.environ["SPECIALIST_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "specialist"


def models_dir() -> Path:
    return specialist_home() / "models"


def gguf_dir() -> Path:
    return specialist_home() / "gguf"


def weight_stamps(folder: str | Path) -> list[str]:
    """Name, size and modification time of a model folder's weight files: changes whenever the
    weights do, without reading gigabytes to hash them. Empty for a hub id (not a folder)."""
    path = Path(folder)
    if not path.is_dir():
        return []
    return [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])]
