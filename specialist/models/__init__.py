"""Stage 1: base models: resolve a reference, prepare the embedded default, prompt format,
GGUF files in (convert.py) and out (gguf_writer.py)."""

from specialist.models.registry import DEFAULT_MODEL, KNOWN_MODELS
from specialist.models.resolve import LoadedModel, ModelSource, load_model, load_tokenizer, prepare_known, resolve

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "LoadedModel", "ModelSource", "load_model",
           "load_tokenizer", "prepare_known", "resolve"]
