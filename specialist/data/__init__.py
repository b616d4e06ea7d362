"""Stage 2: training data: load, validate, measure, report, split, convert."""
