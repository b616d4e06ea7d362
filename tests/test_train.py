"""End to end on tiny models: run folder, learning to stop, overwrite refusal, dry run,
resume after SIGKILL, DDP with two gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from specialist.config import load_train_config
from specialist.errors import SpecialistError
from specialist.run_folder import read_summary
from specialist.train import train

ROWS = [
    {"prompt": "Jak długo trwa wysyłka?", "completion": "Dwa dni robocze."},
    {"prompt": "Czy macie kawę bezkofeinową?", "completion": "Tak, z Kolumbii."},
    {"prompt": "Ile kosztuje dostawa?", "completion": "14,99 zł."},
    {"prompt": "Gdzie jest palarnia?", "completion": "W Krakowie."},
]


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _config(data: Path, model: Path, out: Path, **kw):
    settings = dict(data=data, model=str(model), out=out, batch_size=4, logging_steps=5, save_steps=1000,
                    warmup_ratio=0.0, lr_scheduler="constant")
    settings.update(kw)
    return load_train_config(overrides=settings)


def _cli_process(*args: str) -> subprocess.CompletedProcess:
    """`specialist ARGS` in a process of its own: for resuming a run that another process was killed in."""
    return subprocess.run([sys.executable, "-m", "specialist", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_lora_run_folder_contents_and_reload(tiny_base_model, data_file, tmp_path):
    from specialist.models.resolve import load_model, resolve

    run = train(_config(data_file, tiny_base_model, tmp_path / "run", max_steps=6, logging_steps=2,
                        eval_data=data_file, eval_steps=3), show_progress=False)
    for name in ("config.yaml", "run.json", "metrics.jsonl", "loss.png", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/tokenizer_config.json", "checkpoints"):
        assert (run / name).exists(), name
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["steps"] == 6 and info["method"] == "lora"
    assert info["base_model"] == str(Path(tiny_base_model).resolve())
    assert info["dataset_fingerprint"].startswith("sha256:") and info["examples"] == 4
    for key in ("train_seconds", "tokens_per_second", "train_loss", "final_loss", "eval_loss"):
        assert isinstance(info[key], float) and info[key] > 0, key
    summary = read_summary(run)
    assert summary.to_json() == info and summary.model_extra == {}  # the schema knows every key train writes
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert info["eval_loss"] == min(m["eval_loss"] for m in metrics if "eval_loss" in m)
    assert info["final_loss"] == [m["loss"] for m in metrics if "loss" in m][-1]
    assert info["best_checkpoint"] in {"checkpoint-3", "checkpoint-6"}
    # the threads every step ran with, not only the first choice
    assert sum(info["threads_used"].values()) == 6
    assert info["threads_per_process"] == int(max(info["threads_used"].items(), key=lambda kv: kv[1])[0])
    assert all("threads" in m for m in metrics)
    # the adapter carries the tokenizer with its (default) chat template: the run loads as a model
    source = resolve(str(run))
    assert source.adapter == run / "adapter"
    loaded = load_model(str(run), dtype="float32")
    assert loaded.tokenizer.chat_template is not None


# The first losses of a fixed-seed LoRA run on the tiny Gemma 3 (fp32, so the numbers do not
# depend on the CPU's bf16 support). A change to tokenization, masking, the loss, the LoRA
# set-up or the optimizer moves them. When such a change is intended, run
#   python -m pytest tests/test_train.py -k first_losses -s
# which prints the new values, check that the change explains them, and paste them here.
EXPECTED_FIRST_LOSSES = [10.8078, 10.6117, 10.4875, 10.3923]
LEARNING_STEPS = 12


@pytest.fixture(scope="module")
def learned_run(tiny_base_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("learned")
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return train(_config(data, tiny_base_model, folder / "run", max_steps=LEARNING_STEPS, logging_steps=1,
                         lr=3e-3, seed=0, dtype="fp32"), show_progress=False)


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_lora_learns_in_the_adapter_and_leaves_the_base_alone(learned_run, tiny_base_model):
    from safetensors.torch import load_file

    from specialist.models.resolve import load_model

    adapter = load_file(learned_run / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)  # only adapter weights were saved
    # PEFT starts every lora_B at zero: a non-zero B is what training wrote
    lora_b = [w for name, w in adapter.items() if "lora_B" in name]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)
    base = load_file(tiny_base_model / "model.safetensors")
    loaded = load_model(str(learned_run), dtype="float32").model
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        if key == "lm_head.rows.weight":  # the specialist-sized head: the base's own rows, copied
            from specialist.run_folder import read_kept_vocabulary

            kept, _ = read_kept_vocabulary(learned_run)
            head = base.get("lm_head.weight", base["model.embed_tokens.weight"])  # tied: the embedding
            assert torch.equal(param.detach(), head.float()[kept]), "the kept head's rows changed in training"
            continue
        assert key in base, key
        assert torch.equal(param.detach(), base[key].float()), f"{key} changed in training"
    losses = _losses(learned_run)
    assert len(losses) == LEARNING_STEPS
    # it learned: random init starts near ln(vocab) ≈ 10.8; twelve steps take off several percent
    assert sum(losses[-3:]) / 3 < 0.95 * sum(losses[:3]) / 3, losses


def test_first_losses_of_a_fixed_seed_run(learned_run):
    first = _losses(learned_run)[: len(EXPECTED_FIRST_LOSSES)]
    print("EXPECTED_FIRST_LOSSES =", [round(x, 4) for x in first])
    assert first == pytest.approx(EXPECTED_FIRST_LOSSES, abs=2e-3)


def test_trained_tiny_model_stops_on_its_own(tiny_chat_model, data_file, tmp_path):
    """pad = eos here: had the EOS been masked as padding, the model would never stop."""
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model
    from specialist.models.template import build_messages

    run = train(_config(data_file, tiny_chat_model, tmp_path / "run", method="full", max_steps=40, lr=3e-3),
                show_progress=False)
    assert (run / "model" / "model.safetensors").exists()
    answers = TorchGenerator(load_model(str(run), dtype="float32")).generate(
        [build_messages(r["prompt"]) for r in ROWS], GenerationSettings(max_new_tokens=24))
    for answer, row in zip(answers, ROWS):
        assert answer.finish_reason == "stop", answer
        assert answer.text == row["completion"]


def test_existing_run_folder_is_never_overwritten_silently(tiny_chat_model, data_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")
    with pytest.raises(SpecialistError, match=r"already exists.*--resume.*--overwrite"):
        train(_config(data_file, tiny_chat_model, out, max_steps=1), show_progress=False)
    assert (out / "run.json").read_text() == "{}"
    # a folder that is not a run is not deleted even with --overwrite
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(SpecialistError, match="not a run folder"):
        train(_config(data_file, tiny_chat_model, other, max_steps=1), overwrite=True, show_progress=False)
    assert (other / "notes.txt").read_text() == "keep"
    run = train(_config(data_file, tiny_chat_model, out, max_steps=1), overwrite=True, show_progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_cli_refuses_existing_run_with_one_line(tiny_chat_model, data_file, tmp_path, run_cli):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("data: x\n")
    proc = run_cli("train", "--data", str(data_file), "--model", str(tiny_chat_model), "--out", str(out))
    assert proc.exit_code == 2
    assert proc.stderr.strip().startswith("error:") and "already exists" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dry_run_marks_trained_and_masked_tokens(tiny_chat_model, data_file, tmp_path, run_cli):
    from specialist.models.resolve import load_tokenizer
    from specialist.models.template import build_messages, render_completion, render_prompt
    from specialist.train.dry_run import dry_run

    config = _config(data_file, tiny_chat_model, tmp_path / "run")
    result = dry_run(config)
    tok = load_tokenizer(str(tiny_chat_model))
    assert result.masked_text == render_prompt(tok, build_messages(ROWS[0]["prompt"]))
    assert result.trained_text == render_completion(tok, ROWS[0]["completion"])
    assert result.trained_text.endswith("<|im_end|>")

    proc = run_cli("train", "--data", str(data_file), "--model", str(tiny_chat_model), "--out", str(tmp_path / "run"),
                   "--dry-run", "--lora-r", "4")
    assert proc.exit_code == 0, proc.stderr
    assert "lora_r: 4" in proc.stdout
    masked_line = next(line for line in proc.stdout.splitlines() if line.startswith("masked"))
    trained_line = next(line for line in proc.stdout.splitlines() if line.startswith("trained"))
    assert "|J|ak|" in masked_line and "D|wa| d|ni|" in trained_line and trained_line.endswith("<|im_end|>")
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"training ended before it could be killed: {err[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("timed out waiting for a checkpoint")


def test_resume_after_sigkill_reaches_the_same_step_count(tiny_chat_model, data_file, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(data_file), "--model", str(tiny_chat_model), "--out", str(out),
            "--max-steps", "24", "--batch-size", "2", "--set", "save_steps=4", "--set", "logging_steps=1"]
    proc = subprocess.Popen([sys.executable, "-m", "specialist", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    _wait_for(lambda: (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").exists(), 120, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "adapter").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed: no chance to say so

    resumed = _cli_process("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "completed" and info["steps"] == info["max_steps"] == 24
    assert int(info["resumed_from"].split("-")[1]) >= 8
    state = json.loads((out / "checkpoints" / "checkpoint-24" / "trainer_state.json").read_text())
    assert state["global_step"] == 24
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 25))  # each step logged once: records after the checkpoint were trimmed
    # run.json's training time includes the steps kept from before the kill
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resumed_at = int(info["resumed_from"].split("-")[1])
    before = max(r["train_seconds"] for r in records if r["step"] <= resumed_at)
    assert before > 0 and info["train_seconds"] >= 0.95 * records[-1]["train_seconds"]
    assert [r["train_seconds"] for r in records] == sorted(r["train_seconds"] for r in records)
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_resume_without_a_run_is_a_clear_error(tmp_path, run_cli):
    proc = run_cli("train", "--out", str(tmp_path / "nothing"), "--resume")
    assert proc.exit_code == 2 and "no run to resume" in proc.stderr and "Traceback" not in proc.stderr


def test_ddp_two_gloo_processes_train_and_save_once(tiny_chat_model, data_file, tmp_path):
    # --standalone: a free rendezvous port, so suites sharing the machine do not collide on a fixed one
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "specialist", "train", "--data", str(data_file), "--model", str(tiny_chat_model),
         "--out", str(out), "--max-steps", "4", "--batch-size", "2", "--set", "logging_steps=1",
         "--set", "save_steps=2"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["processes"] == 2 and info["status"] == "completed" and info["steps"] == 4
    # 4 examples, 2 processes × batch 2: one step is one epoch
    assert info["epochs"] == 4.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]  # written by rank 0 only
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert proc.stdout.count(str(out)) == 1  # one process reported the run
