"""Device plans: what the Trainer and from_pretrained get on a CUDA GPU (pretended here), on
this CPU, and for each method; the benchmark registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from specialist.config import TrainConfig
from specialist.errors import SpecialistError
from specialist.train import setup
from specialist.train.setup import plan_model, training_arguments, training_arguments_kwargs

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(data=Path("d.jsonl"), **kw)


@pytest.fixture
def pretend_gpu(monkeypatch):
    """A CUDA GPU with bf16 and flash-attn installed, as far as the plan can tell."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(setup, "has_package", lambda name: name in ("flash_attn", "bitsandbytes"))


def _args_for(plan, config, tmp_path, monkeypatch=None, has_eval=False):
    """The TrainingArguments kwargs built for the plan (TrainingArguments itself refuses CUDA
    flags on this CPU-only machine)."""
    return training_arguments_kwargs(config, plan, tmp_path, has_eval=has_eval)


def test_gpu_lora_bf16_mixed_precision_flash_attention(pretend_gpu, tmp_path, monkeypatch):
    config = _cfg(gradient_checkpointing=True)
    plan = plan_model(config, CUDA)
    assert plan.load_kwargs["dtype"] == torch.bfloat16
    assert plan.load_kwargs["attn_implementation"] == "flash_attention_2"
    assert plan.peft["target_modules"] == "all-linear" and plan.peft["r"] == 16 and not plan.peft["use_dora"]
    args = _args_for(plan, config, tmp_path, monkeypatch)
    assert args["bf16"] is True and args["fp16"] is False and args["use_cpu"] is False
    assert args["gradient_checkpointing"] is True
    assert args["gradient_checkpointing_kwargs"] == {"use_reentrant": False}


def test_gpu_without_bf16_uses_fp16_and_full_keeps_fp32_master_weights(pretend_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    plan = plan_model(_cfg(method="full"), CUDA)
    assert plan.peft is None
    assert plan.precision.load_dtype == torch.float32 and plan.precision.mixed == "fp16"
    args = _args_for(plan, _cfg(method="full"), tmp_path, monkeypatch)
    assert args["fp16"] is True and args["bf16"] is False


def test_gpu_qlora_loads_4bit_nf4(pretend_gpu):
    plan = plan_model(_cfg(method="qlora"), CUDA)
    q = plan.load_kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16


def test_qlora_on_cpu_is_a_clear_error():
    with pytest.raises(SpecialistError, match="qlora needs a CUDA GPU"):
        plan_model(_cfg(method="qlora"), CPU)


def test_dora_and_fsdp_reach_peft_and_trainer(tmp_path, monkeypatch):
    config = _cfg(method="dora", fsdp="full_shard auto_wrap", lora_r=8, lora_alpha=16, lora_dropout=0.1)
    plan = plan_model(config, CPU)
    assert plan.peft["use_dora"] is True and plan.peft["r"] == 8 and plan.peft["lora_dropout"] == 0.1
    assert _args_for(plan, config, tmp_path, monkeypatch)["fsdp"] == "full_shard auto_wrap"


def test_cpu_plan_bf16_base_with_autocast_only_where_native(monkeypatch, tmp_path):
    from specialist.models import device

    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: True)
    plan = plan_model(_cfg(), CPU)
    assert plan.load_kwargs["dtype"] == torch.bfloat16 and plan.precision.mixed == "bf16"
    assert plan.load_kwargs["attn_implementation"] == "sdpa_packed"  # padding-free by default
    assert plan_model(_cfg(padding_free=False), CPU).load_kwargs["attn_implementation"] == "sdpa"
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: False)
    plan = plan_model(_cfg(), CPU)
    assert plan.load_kwargs["dtype"] == torch.float32 and plan.precision.mixed is None
    with pytest.raises(SpecialistError, match="fp16 needs a CUDA GPU"):
        plan_model(_cfg(dtype="fp16"), CPU)


def test_eval_aligns_checkpoints_for_best_model(tmp_path):
    config = _cfg(eval_steps=7, save_steps=100, early_stopping_patience=2)
    plan = plan_model(config, CPU)
    args = _args_for(plan, config, tmp_path, has_eval=True)
    training_arguments(config, plan, tmp_path, has_eval=True)  # transformers accepts them
    assert args["eval_strategy"] == args["save_strategy"] == "steps"
    assert args["eval_steps"] == args["save_steps"] == 7
    assert args["load_best_model_at_end"] is True and args["metric_for_best_model"] == "eval_loss"


def test_adapter_weights_stay_fp32_over_bf16_base(tiny_chat_model):
    config = _cfg(model=str(tiny_chat_model), dtype="bf16")
    plan = plan_model(config, CPU)
    model = setup.load_model_for_training(str(tiny_chat_model), plan, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    # every linear layer of the blocks got an adapter
    names = {n.split(".lora_A")[0].split(".")[-1] for n, p in model.named_parameters() if "lora_A" in n}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names


def test_threads_back_off_when_the_machine_is_busy(monkeypatch):
    monkeypatch.setattr(setup, "physical_cores", lambda: 4)
    assert setup.default_threads(other_load=0.2) == 4
    assert setup.default_threads(local_processes=2, other_load=0.2) == 2
    assert setup.default_threads(other_load=3.0) == 1
    assert setup.default_threads(other_load=1.0) == 3
    assert setup.default_threads(other_load=9.0) == 1


def _fake_cpu(monkeypatch, readings):
    """_cpu_seconds returns (machine busy, own) CPU seconds from `readings`, one per call, and
    the clock moves 1 s per call, so differences are cores."""
    readings = iter(readings)
    clock = iter(range(1000))
    monkeypatch.setattr(setup, "_cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(setup.time, "monotonic", lambda: float(next(clock)))


def test_other_load_does_not_count_our_own_work(monkeypatch):
    # 2 cores busy for a second: both ours (model loading) -> nobody else; one of them ours -> one other
    _fake_cpu(monkeypatch, [(100.0, 10.0), (102.0, 12.0), (104.0, 13.0)])
    load = setup.OtherLoad()
    assert load.cores(min_window=0) == 0.0
    assert load.cores(min_window=0) == 1.0
    # another process of this same run (DDP on one machine) is as busy as we are, and not "other"
    _fake_cpu(monkeypatch, [(0.0, 0.0), (2.0, 1.0)])
    assert setup.OtherLoad().cores(siblings=1, min_window=0) == 0.0


def test_a_run_after_its_own_preparation_starts_on_every_core(monkeypatch):
    """The load average still holds the minute of model preparation before training; the
    thread choice must not read it as a busy machine (it used to start on one thread)."""
    monkeypatch.setattr(setup, "physical_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.2, 0.6))
    _fake_cpu(monkeypatch, [(50.0, 40.0), (50.1, 40.05)])  # the machine is idle now
    assert setup.default_threads() == 2
    _fake_cpu(monkeypatch, [(50.0, 40.0), (53.8, 40.0)])  # someone else keeps 1.9 cores busy (clock: 2 s)
    assert setup.default_threads() == 1


def test_own_cpu_time_is_measured():
    import time as real_time

    before = setup._cpu_seconds()
    if before is None:
        pytest.skip("no /proc/stat on this system")
    end = real_time.process_time() + 0.3
    while real_time.process_time() < end:
        pass
    after = setup._cpu_seconds()
    assert after[1] - before[1] >= 0.25  # our own spin is counted as ours
    assert after[0] - before[0] >= 0.25  # and as the machine's


def test_adaptive_threads_follow_the_load(monkeypatch):
    from types import SimpleNamespace

    from specialist.train.callbacks import AdaptiveThreads

    monkeypatch.setattr(setup, "physical_cores", lambda: 2)
    loads = iter([6.0, 0.1])
    monkeypatch.setattr(setup.OtherLoad, "cores", lambda self, siblings=0, min_window=0.25: next(loads))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cb = AdaptiveThreads(every=10)
        for step in range(25):
            cb.on_step_begin(None, SimpleNamespace(global_step=step), None)
            if step == 9:
                assert torch.get_num_threads() == 2  # decided only every 10 steps
            if step == 10:
                assert torch.get_num_threads() == 1  # another process took the cores
        assert torch.get_num_threads() == 2  # it left at step 20
        assert cb.steps_at == {2: 15, 1: 10}  # what run.json reports
    finally:
        torch.set_num_threads(before)


BENCH = '''
"""A fake benchmark for the registry test."""
NAME = "fake"
DESCRIPTION = "fake speed"
def bench(quick=False):
    rows = [{"recipe": "a", "tokens_per_second": 10 if quick else 20}]
    return {"rows": rows, "summary": {"speedup": 2.0}, "ok": True}
'''


def test_bench_registry_runs_what_benchmarks_define(tmp_path, monkeypatch, run_cli):
    from specialist.bench import discover, run_benchmarks

    (tmp_path / "bench_fake.py").write_text(BENCH)
    (tmp_path / "bench_script_only.py").write_text("def run():\n    return 1\n")
    assert list(discover(tmp_path)) == ["fake"]
    [result] = run_benchmarks(quick=True, directory=tmp_path)
    assert result["name"] == "fake" and result["rows"][0]["tokens_per_second"] == 10 and result["ok"]
    with pytest.raises(SpecialistError, match="unknown benchmark nope; known: fake"):
        run_benchmarks(["nope"], directory=tmp_path)

    proc = run_cli("bench", "--json", env={"SPECIALIST_BENCHMARKS": str(tmp_path)})
    assert proc.exit_code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["benchmarks"][0]["rows"][0]["tokens_per_second"] == 20


def test_repository_registers_the_training_benchmark():
    from specialist.bench import discover

    assert "train_speed" in discover()


def test_progress_prints_each_step_once_and_the_summary_only_to_the_file(tmp_path, capsys):
    """Trainer's last log event (train_loss, runtime) comes after the last step's own line."""
    from types import SimpleNamespace

    from specialist.train.callbacks import MetricsCallback

    cb = MetricsCallback(tmp_path / "metrics.jsonl")
    state = SimpleNamespace(global_step=0, max_steps=2, epoch=0.0, num_input_tokens_seen=0, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    for step in (1, 2):
        state.global_step, state.epoch, state.num_input_tokens_seen = step, step / 2, 100 * step
        cb.on_log(None, state, None, logs={"loss": 2.0 / step, "learning_rate": 1e-4})
    cb.on_log(None, state, None, logs={"train_loss": 1.5, "train_runtime": 3.0})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split("  ")[0] for line in lines] == ["step 1/2", "step 2/2"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and records[-1]["train_loss"] == 1.5
