"""Writing a tokenizer folder that loads fast.

transformers 5 no longer writes `added_tokens_decoder` into tokenizer_config.json. Reading such
a folder then parses the whole tokenizer.json in Python one extra time, only to find the added
tokens: for Gemma 3's 33 MB file that is ~1 s of every command that loads its tokenizer
(train, eval, chat, serve, export). The field is the one transformers 4 wrote and 5 still
reads first, so a folder written here loads the same tokenizer, a second sooner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from specialist.io import atomic_write_json, read_text

CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"


def save_tokenizer(tokenizer: Any, folder: Path | str) -> None:
    """tokenizer.save_pretrained(folder), with the added tokens recorded in its config."""
    tokenizer.save_pretrained(str(folder))
    config_path = Path(folder) / CONFIG
    config = json.loads(read_text(config_path))
    if "added_tokens_decoder" not in config:
        config["added_tokens_decoder"] = {str(i): token.__getstate__()
                                          for i, token in sorted(tokenizer.added_tokens_decoder.items())}
        atomic_write_json(config_path, config)


def record_added_tokens(folder: Path) -> bool:
    """Add `added_tokens_decoder` to a folder a tokenizer was saved into before (a model cache
    written by an earlier version), from its tokenizer.json. Returns whether it changed. The
    field is written even when empty: its absence is what costs the extra parse."""
    config_path, tokenizer_path = folder / CONFIG, folder / TOKENIZER_JSON
    if not config_path.is_file() or not tokenizer_path.is_file():
        return False
    text = read_text(config_path)
    if '"added_tokens_decoder"' in text:  # no parse of the (1 MB) config once it is there
        return False
    config = json.loads(text)
    added = json.loads(read_text(tokenizer_path)).get("added_tokens") or []
    config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                      for t in sorted(added, key=lambda t: t["id"])}
    atomic_write_json(config_path, config)
    return True
