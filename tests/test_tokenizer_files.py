"""A tokenizer folder written by save_tokenizer loads the same tokenizer without transformers
parsing tokenizer.json in Python a second time."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from specialist.models.tokenizer_files import record_added_tokens, save_tokenizer


def _tokenizer_json_parses(folder: Path, monkeypatch) -> int:
    """How many times loading `folder` reads its tokenizer.json with Python's json."""
    import json as json_module

    parses = []
    real_load = json_module.load

    def counting_load(handle, *args, **kwargs):
        if Path(getattr(handle, "name", "")).name == "tokenizer.json":
            parses.append(handle.name)
        return real_load(handle, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(json_module, "load", counting_load)
        AutoTokenizer.from_pretrained(folder)
    return len(parses)


def _same(a, b) -> None:
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert a.added_tokens_decoder == b.added_tokens_decoder
    assert a.all_special_tokens == b.all_special_tokens
    assert (a.bos_token, a.eos_token, a.pad_token) == (b.bos_token, b.eos_token, b.pad_token)
    assert a.chat_template == b.chat_template
    text = "Zamówienie nr 12 <|im_start|> ląduje jutro 🙂"
    assert a(text)["input_ids"] == b(text)["input_ids"]


@pytest.mark.parametrize("which", ["chat_tokenizer_dir", "base_tokenizer_dir"])
def test_a_saved_folder_loads_the_same_tokenizer_with_one_parse_fewer(which, request, tmp_path, monkeypatch):
    original = AutoTokenizer.from_pretrained(request.getfixturevalue(which))
    original.add_tokens(["<|shop|>"], special_tokens=True)  # added after loading: recorded too
    plain, ours = tmp_path / "plain", tmp_path / "ours"
    original.save_pretrained(plain)
    save_tokenizer(original, ours)

    config = json.loads((ours / "tokenizer_config.json").read_text())
    assert "<|shop|>" in [t["content"] for t in config["added_tokens_decoder"].values()]
    _same(original, AutoTokenizer.from_pretrained(ours))
    assert _tokenizer_json_parses(ours, monkeypatch) < _tokenizer_json_parses(plain, monkeypatch)


def test_record_added_tokens_upgrades_a_folder_once(chat_tokenizer_dir, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    original = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    original.save_pretrained(folder)  # as transformers 5 writes it: no added_tokens_decoder
    before = _tokenizer_json_parses(folder, monkeypatch)

    assert record_added_tokens(folder) is True
    assert record_added_tokens(folder) is False  # already there: nothing is read or written again
    _same(original, AutoTokenizer.from_pretrained(folder))
    assert _tokenizer_json_parses(folder, monkeypatch) < before


def test_record_added_tokens_leaves_other_folders_alone(chat_tokenizer_dir, tmp_path):
    assert record_added_tokens(tmp_path) is False  # no tokenizer at all
    only_json = tmp_path / "only-json"
    only_json.mkdir()
    shutil.copy(Path(chat_tokenizer_dir) / "tokenizer.json", only_json)
    assert record_added_tokens(only_json) is False
    assert sorted(p.name for p in only_json.iterdir()) == ["tokenizer.json"]


def test_a_cached_known_model_is_upgraded_when_resolved(chat_tokenizer_dir, tmp_path, monkeypatch):
    from specialist.models import resolve as resolve_module
    from specialist.models.registry import KNOWN_MODELS

    known = KNOWN_MODELS["gemma-3-270m"]
    folder = known.cache_path  # the tests' isolated home
    folder.mkdir(parents=True)
    AutoTokenizer.from_pretrained(chat_tokenizer_dir).save_pretrained(folder)
    (folder / "config.json").write_text("{}")  # cached: nothing is prepared again
    monkeypatch.setattr(resolve_module, "prepare_known", lambda name: pytest.fail("prepared again"))

    resolve_module.resolve("gemma-3-270m")
    assert "added_tokens_decoder" in json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text("{not json")  # damaged: left for loading to report
    resolve_module.resolve("gemma-3-270m")
    assert (folder / "tokenizer_config.json").read_text() == "{not json"
