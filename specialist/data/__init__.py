"""Stage 2: training data: load, validate, measure, report, split, convert.

    from specialist.data import load_examples
    examples = load_examples("train.jsonl")   # list[Example]; SpecialistError(exit 1) on bad data
"""

from __future__ import annotations

from typing import Any

__all__ = ["Example", "LoadedData", "load_examples", "read_dataset"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m specialist.data.<module>` runs without importing
    # the module twice.
    if name == "Example":
        from specialist.data.example import Example

        return Example
    if name in ("LoadedData", "load_examples", "read_dataset"):
        from specialist.data import validate

        return getattr(validate, name)
    raise AttributeError(f"module 'specialist.data' has no attribute {name!r}")
