"""Stage 4: proof: fine-tuning versus prompt engineering, measured."""
