"""Stage 2: training data: load, validate, measure, report, split, convert."""

from specialist.data.example import Example
from specialist.data.validate import LoadedData, load_examples, read_dataset

__all__ = ["Example", "LoadedData", "load_examples", "read_dataset"]
