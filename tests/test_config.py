"""Settings: YAML + overrides, one clear located line per problem, exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from specialist.config import TrainConfig, load_train_config
from specialist.errors import ConfigError, SpecialistError
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


def test_learning_rate_defaults_by_method_unless_given(tmp_path):
    # full fine-tuning moves the pretrained weights: the adapters' 2e-4 would be too large a step
    assert TrainConfig(data=Path("d.jsonl"), method="full").lr == 5e-5
    assert TrainConfig(data=Path("d.jsonl"), method="dora").lr == 2e-4
    assert TrainConfig(data=Path("d.jsonl"), method="full", lr=1e-4).lr == 1e-4
    path = _yaml(tmp_path, "data: d.jsonl\nmethod: full\n")
    assert load_train_config(path, {"lr": None}).lr == 5e-5
    assert load_train_config(path, {"lr": 3e-4}).lr == 3e-4


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


@pytest.mark.parametrize(("content", "args", "expected"), [
    ("data: d.jsonl\nlora_r: [8\n", [], "invalid YAML"),
    ("data: d.jsonl\nbogus: 1\n", [], "bogus: unknown setting"),
    ("data: d.jsonl\n", ["--lora-r", "0"], "command line: lora_r: input should be greater than 0"),
    ("data: d.jsonl\n", ["--method", "qlora", "--dry-run"], "qlora needs a CUDA GPU"),
])
def test_cli_config_errors_are_one_line_exit_2(tmp_path, content, args, expected, run_cli, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the qlora case: a machine without CUDA
    path = _yaml(tmp_path, content)
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    proc = run_cli("train", "--config", str(path), *args)
    assert proc.exit_code == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr


@pytest.mark.parametrize("cuda", [False, True])
def test_qlora_is_planned_on_cuda_and_refused_without_it(cuda, monkeypatch):
    """Device detection mocked both ways, so the case holds on a CPU machine and on a GPU one."""
    import torch

    from specialist.models.device import pick_device
    from specialist.train import setup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(setup, "has_package", lambda name: name == "bitsandbytes")
    config = load_train_config(overrides={"data": "d.jsonl", "method": "qlora"})
    device = pick_device(config.device)
    assert device.type == ("cuda" if cuda else "cpu")
    if not cuda:
        with pytest.raises(SpecialistError, match="qlora needs a CUDA GPU"):
            setup.plan_model(config, device)
        return
    plan = setup.plan_model(config, device)
    quant = plan.load_kwargs["quantization_config"]
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4"
    assert plan.load_kwargs["dtype"] == torch.bfloat16 and plan.peft is not None
