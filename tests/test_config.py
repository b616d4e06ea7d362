"""Settings: YAML + overrides, one clear located line per problem, exit code 2 from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from specialist.config import TrainConfig, load_train_config
from specialist.errors import ConfigError
from specialist.train.cli_support import parse_set_options, resolve_train_config


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_fit_the_embedded_model():
    c = TrainConfig(data=Path("d.jsonl"))
    assert (c.model, c.method, c.lora_r, c.batch_size, c.max_length, c.lr) == ("gemma-3-270m", "lora", 16, 8, 256, 2e-4)
    assert c.target_modules == "all-linear" and c.padding_free and c.completion_only_head
    assert c.run_dir() == Path("runs/d-lora")


def test_yaml_then_overrides_win(tmp_path):
    (tmp_path / "data.jsonl").write_text("{}\n")
    path = _yaml(tmp_path, "data: data.jsonl\nlora_r: 8\nlr: 0.001\nmethod: dora\n")
    c = load_train_config(path, {"lora_r": 32, "lr": None})
    assert c.lora_r == 32 and c.lr == 0.001 and c.method == "dora"
    assert c.data == tmp_path / "data.jsonl"  # relative to the YAML file


def test_unknown_key_is_named_with_its_file(tmp_path):
    path = _yaml(tmp_path, "data: d.jsonl\nlora_rank: 8\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: lora_rank: unknown setting") and "lora_r" in msg and "\n" not in msg


def test_bad_value_says_what_and_where(tmp_path):
    path = _yaml(tmp_path, "data: d.jsonl\nlora_r: -4\n")
    with pytest.raises(ConfigError, match=r"train.yaml: lora_r: input should be greater than 0 \(got -4\)"):
        load_train_config(path)
    with pytest.raises(ConfigError, match=r"^command line: method: input should be 'lora', 'dora', 'qlora' or 'full'"):
        load_train_config(path, {"method": "lorra", "lora_r": 4})


def test_bad_yaml_has_a_line_number(tmp_path):
    path = _yaml(tmp_path, "data: d.jsonl\nlora_r: [8\nlr: 1\n")
    with pytest.raises(ConfigError, match=r"train.yaml:\d+: invalid YAML"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_train_config(_yaml(tmp_path, "- a\n- b\n"))


def test_missing_data_and_resume_without_out():
    with pytest.raises(ConfigError, match="--data"):
        resolve_train_config(None, [], resume=False, out=None, overrides={})
    with pytest.raises(ConfigError, match="--resume needs --out"):
        resolve_train_config(None, [], resume=True, out=None, overrides={})


def test_set_options_parse_yaml_scalars():
    assert parse_set_options(["lora_dropout=0.05", "target_modules=[q_proj, v_proj]", "padding-free=false"]) == {
        "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "padding_free": False}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_options(["novalue"])


@pytest.mark.parametrize("content, args, expected", [
    ("data: d.jsonl\nlora_r: [8\n", [], "invalid YAML"),
    ("data: d.jsonl\nbogus: 1\n", [], "bogus: unknown setting"),
    ("data: d.jsonl\n", ["--lora-r", "0"], "command line: lora_r: input should be greater than 0"),
    ("data: d.jsonl\n", ["--method", "qlora", "--dry-run"], "qlora needs a CUDA GPU"),
])
def test_cli_config_errors_are_one_line_exit_2(tmp_path, content, args, expected):
    path = _yaml(tmp_path, content)
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    proc = subprocess.run([sys.executable, "-m", "specialist", "train", "--config", str(path), *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
