"""Stage 1: base models: resolve a reference and load it (resolve.py), the known models and the
embedded default (registry.py), the prompt format (template.py), GGUF files in (convert.py)
and out (gguf_writer.py).

Nothing is imported here: the registry and the prompt template (with its Message type) are
used by stages that must not pay for torch, which resolve.py imports."""
