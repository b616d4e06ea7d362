"""`train(config) -> run folder`: the whole training stage, from settings to a loadable run.

    from specialist.config import load_train_config
    from specialist.train import train
    run_dir = train(load_train_config(overrides={"data": "examples/coffee/train.jsonl"}))
    # run_dir is a model reference: specialist.models.resolve.load_model(str(run_dir))

Under torchrun / accelerate launch every process runs this; only rank 0 touches the run
folder (the Trainer itself syncs the processes and saves checkpoints from rank 0)."""

from __future__ import annotations

import errno
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialist.config import TrainConfig
from specialist.data.example import Example
from specialist.errors import Interrupted, interrupt_behind
from specialist.io import atomic_dir, is_disk_full
from specialist.models.tokenizer_files import save_tokenizer
from specialist.run_folder import (
    RunFolder,
    RunSummary,
    last_checkpoint,
    plot_loss,
    prepare_run_dir,
    read_kept_vocabulary,
    read_metrics,
    remove_incomplete_checkpoints,
    trim_metrics,
    write_config,
    write_kept_vocabulary,
    write_summary,
)
from specialist.train.dataset import fingerprint, read_examples, tokenize_examples, with_knowledge


def process_rank() -> tuple[int, int, int]:
    """(rank, world size, processes on this machine) as torchrun/accelerate set them."""
    env = os.environ
    return (int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")),
            int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1"))))


def model_reference(ref: str) -> str:
    """What run.json records as base_model: an absolute path for local folders and files (so
    the run loads from anywhere), the name or hub id otherwise."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref


def set_threads(config: TrainConfig, local_processes: int) -> int:
    import torch

    from specialist.train.setup import default_threads

    threads = config.threads or default_threads(local_processes)
    torch.set_num_threads(threads)
    return threads


def _kept(run_dir: Path) -> str:
    kept = last_checkpoint(run_dir)
    return f"kept checkpoints/{kept.name}" if kept else "no checkpoint yet"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _save_final(trainer: Any, tokenizer: Any, run_dir: Path, full: bool) -> Path:
    """adapter/ (or model/ for full fine-tuning) with the tokenizer and its chat template,
    written to a temporary folder first and renamed into place."""
    final = RunFolder(run_dir).weights(full)
    with atomic_dir(final) as tmp:
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tokenizer, tmp)
    return final


def train(config: TrainConfig, *, overwrite: bool = False, resume: bool = False,
          show_progress: bool = True) -> Path:
    """Fine-tune config.model on config.data; returns the run folder."""
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.trainer_callback import PrinterCallback

    from specialist.models.device import pick_device
    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.train.callbacks import AdaptiveThreads, MetricsCallback
    from specialist.train.setup import load_model_for_training, plan_model, training_arguments
    from specialist.train.trainer import CompletionTrainer, make_collator

    rank, world, local = process_rank()
    is_main = rank == 0
    run_dir = config.run_dir()
    if is_main:
        prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    threads = set_threads(config, local)
    set_seed(config.seed)

    device = pick_device(config.device)
    plan = plan_model(config, device)  # fails fast on e.g. qlora without CUDA
    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = training_set(config)
    train_examples, eval_examples, knowledge = examples.train, examples.eval, examples.knowledge
    task_examples, general_mix = examples.task_examples, examples.general_mix
    train_features = tokenize_examples(tokenizer, train_examples, config.max_length)
    eval_features = tokenize_examples(tokenizer, eval_examples, config.max_length) if eval_examples else None

    checkpoint = last_checkpoint(run_dir) if resume else None
    run = RunFolder(run_dir)
    metrics_path = run.metrics
    summary = RunSummary(
        base_model=model_reference(config.model),
        method=config.method,
        dataset=str(config.data),
        dataset_fingerprint=fingerprint(config.data),
        examples=task_examples if knowledge is None else knowledge["summary"]["augment"]["examples"],
        eval_data=str(config.eval_data) if config.eval_data else None,
        eval_dataset_fingerprint=fingerprint(config.eval_data) if config.eval_data else None,
        eval_examples=len(eval_examples),
        device=device.type,
        base_dtype=str(plan.precision.load_dtype).replace("torch.", ""),
        mixed_precision=plan.precision.mixed,
        processes=world,
        threads_per_process=threads,
        pid=os.getpid(),
        host=socket.gethostname(),
        status="running",
        started_at=_now(),
    )
    if knowledge is not None or general_mix is not None:
        summary.training_examples = len(train_examples)  # with the abstention and general examples
    summary.general_mix = general_mix
    saved = read_kept_vocabulary(run_dir) if resume else None  # a resumed run keeps the set it started with
    head_tokens = saved[0] if saved else kept_vocabulary(config, tokenizer, train_features, eval_features, knowledge)
    if head_tokens is not None:
        summary.output_head = {"tokens": len(head_tokens), "vocabulary": len(tokenizer),
                               "training": "kept" if trains_over_kept(config) else "full"}
    if is_main:
        if head_tokens is not None:
            write_kept_vocabulary(run_dir, head_tokens, len(tokenizer))
        if knowledge is not None:
            from specialist.knowledge.snapshot import save_snapshot

            summary.knowledge = save_snapshot(knowledge["context"].kb, run_dir, knowledge["context"].settings,
                                              knowledge["summary"])
        write_config(run_dir, config.to_yaml_dict())
        if resume:
            remove_incomplete_checkpoints(run_dir)  # a kill mid-save leaves one behind
            trim_metrics(metrics_path, int(checkpoint.name.split("-")[1]) if checkpoint else 0)
            summary.resumed_from = checkpoint.name if checkpoint else None
        write_summary(run_dir, summary)

    trainer = None
    try:
        model = load_model_for_training(source.weights, plan, config)
        if head_tokens is not None and trains_over_kept(config):
            from specialist.models.vocab_head import REST_SAMPLES, use_kept_head

            use_kept_head(model, head_tokens, vocab_logits=False, rest_samples=REST_SAMPLES)
        args = training_arguments(config, plan, run.checkpoints, has_eval=eval_features is not None)
        # a resumed run counts the time its kept steps took (the last record up to the checkpoint)
        before = [m.get("train_seconds", 0.0) for m in read_metrics(metrics_path)] if resume else []
        metrics_cb = MetricsCallback(metrics_path, show_progress=show_progress and is_main,
                                     seconds_before=float(before[-1]) if before else 0.0)
        callbacks: list[Any] = [metrics_cb]
        adaptive = AdaptiveThreads(local) if config.threads is None else None
        if adaptive is not None:
            callbacks.append(adaptive)
        if eval_features is not None and config.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
        if is_main:
            callbacks.extend(_tensorboard(run_dir))
        trainer = CompletionTrainer(
            model=model, args=args, train_dataset=train_features, eval_dataset=eval_features,
            data_collator=make_collator(tokenizer, config.padding_free), processing_class=tokenizer,
            callbacks=callbacks, head_on_completion_only=config.completion_only_head,
        )
        trainer.remove_callback(PrinterCallback)  # our MetricsCallback prints the progress line
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException as exc:
        interrupt = interrupt_behind(exc)  # Ctrl-C or SIGTERM, maybe reported as a library's error
        if interrupt is None:
            _failed(exc, run, run_dir, summary, trainer, is_main)
            raise
        step = trainer.state.global_step if trainer is not None else 0
        if is_main:
            remove_incomplete_checkpoints(run_dir)  # the signal may have come mid-save
            write_summary(run_dir, summary.model_copy(update={"status": "interrupted", "steps": step}))
        raise Interrupted(f"interrupted at step {step} ({_kept(run_dir)}); continue with: "
                          f"specialist train --out {run_dir} --resume", interrupt) from None

    if trainer.is_world_process_zero():
        try:
            _save_final(trainer, tokenizer, run_dir, full=config.method == "full")
        except BaseException as exc:
            try:
                write_summary(run_dir, summary.model_copy(update={
                    "status": "failed", "error": str(exc)[:500], "steps": trainer.state.global_step}))
            except OSError:
                pass
            raise
        metrics = read_metrics(metrics_path)
        losses = [m["loss"] for m in metrics if "loss" in m]
        evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
        summary = summary.model_copy(update={
            "status": "completed",
            "finished_at": _now(),
            "steps": trainer.state.global_step,
            "max_steps": trainer.state.max_steps,
            "epochs": round(float(trainer.state.epoch or 0), 4),
            "train_seconds": round(metrics_cb.seconds_before + float(result.metrics.get("train_runtime", 0.0)), 2),
            "train_tokens": int(trainer.state.num_input_tokens_seen),
            "tokens_per_second": round(metrics_cb.throughput.tokens_per_second, 1),
            "train_loss": float(result.training_loss),
            "final_loss": losses[-1] if losses else None,
            "eval_loss": min(evals) if evals else None,
            "best_checkpoint": (Path(trainer.state.best_model_checkpoint).name
                                if trainer.state.best_model_checkpoint else None),
        })
        if adaptive is not None and adaptive.steps_at:
            summary.threads_per_process = adaptive.steps_at.most_common(1)[0][0]
            summary.threads_used = {str(n): steps for n, steps in sorted(adaptive.steps_at.items())}
        write_summary(run_dir, summary)
        if metrics:
            plot_loss(metrics, run.loss_plot, f"{run_dir.name}: {config.method} on {Path(config.data).name}")
    trainer.accelerator.wait_for_everyone()
    return run_dir


def _add_knowledge(config: TrainConfig, train_examples: list, eval_examples: list) -> tuple[dict[str, Any], list, list]:
    """Retrieved passages into every prompt; the knowledge base is snapshotted into the run."""
    from specialist.console import err_console
    from specialist.knowledge.passages import load_knowledge
    from specialist.knowledge.runtime import KnowledgeContext
    from specialist.knowledge.snapshot import RetrievalSettings

    context = KnowledgeContext(load_knowledge(config.knowledge),
                               RetrievalSettings(top_k=config.knowledge_top_k, min_share=config.knowledge_min_share,
                                                 method=config.retrieval,
                                                 embedding_model=config.embedding_model,
                                                 grounded_numbers=config.knowledge_grounded_numbers,
                                                 context_contrast=config.knowledge_context_contrast))
    train_examples, report = with_knowledge(train_examples, context, config.abstain_share, config.seed,
                                            abstain_related=config.abstain_related)
    if eval_examples:
        eval_examples, _ = with_knowledge(eval_examples, context, 0.0, config.seed, training=False)
    err_console.print(
        f"[dim]knowledge: {len(context.kb)} passages, top {config.knowledge_top_k} ({config.retrieval}, "
        f"{context.retriever.language or 'no stemming'}); answer's passage added to {report['answer_passage_added']} "
        f"examples, {report['abstentions']} abstention examples ({report['abstention_source'] or 'none'}"
        f"{'; near miss: ' + str(report['abstentions_related']) if report['abstentions_related'] else ''})[/dim]")
    return {"context": context, "summary": {"augment": report}}, train_examples, eval_examples


@dataclass
class TrainingSet:
    """The examples a run trains and evaluates on, as the Trainer sees them."""

    train: list[Example]
    eval: list[Example]
    task_examples: int  # the task's own (with the knowledge base's abstention examples, before general ones)
    knowledge: dict[str, Any] | None = None  # {"context": KnowledgeContext, "summary": {...}}
    general_mix: dict[str, Any] | None = None


def training_set(config: TrainConfig) -> TrainingSet:
    """The run's examples: read, with retrieved passages (knowledge base) and general examples mixed in."""
    train_examples = read_examples(config.data, config.system_prompt)
    eval_examples = read_examples(config.eval_data, config.system_prompt) if config.eval_data else []
    knowledge = None
    if config.knowledge is not None:
        knowledge, train_examples, eval_examples = _add_knowledge(config, train_examples, eval_examples)
    task_examples = len(train_examples)
    general_mix = None
    if config.mix_general:  # after the knowledge base: general examples carry no retrieved passages
        train_examples, general_mix = _mix_general(config, train_examples)
    return TrainingSet(train_examples, eval_examples, task_examples, knowledge, general_mix)


def kept_vocabulary(config: TrainConfig, tokenizer: Any, train_features: list, eval_features: list | None,
                    knowledge: dict[str, Any] | None) -> list[int] | None:
    """The token ids of a specialist-sized output head (models.vocab_head), or None for the full
    head."""
    if not keeps_vocabulary(config):
        return None
    from specialist.knowledge.retrieve import passage_text
    from specialist.models.vocab_head import kept_token_ids

    features = [*train_features, *(eval_features or [])]
    texts = [passage_text(p) for p in knowledge["context"].kb.passages] if knowledge else []
    return kept_token_ids(tokenizer, (f["input_ids"] for f in features), texts)


def keeps_vocabulary(config: TrainConfig) -> bool:
    """Whether the run has a kept set at all: full fine-tuning trains the tied input embedding
    the head shares, and keeps the full head."""
    return config.output_head != "full" and config.method != "full"


def trains_over_kept(config: TrainConfig) -> bool:
    """Whether the loss is computed over the kept vocabulary (output_head kept). FSDP shards the
    head's weights, which the kept rows are selected from, so it trains over the whole one."""
    return config.output_head == "kept" and keeps_vocabulary(config) and not config.fsdp


def _mix_general(config: TrainConfig, train_examples: list) -> tuple[list, dict[str, Any]]:
    """General examples making config.mix_general_share of the training set (data.general)."""
    from specialist.console import err_console
    from specialist.data.general import general_path, mix_general, read_general

    path = general_path(config.mix_general or "")
    mixed, report = mix_general(train_examples, read_general(path), config.mix_general_share, config.seed)
    err_console.print(
        f"[dim]general examples: {report['examples']} from {path} ({report['distinct']} distinct, "
        f"{report['actual_share']:.1%} of {len(mixed)} training examples"
        + (f", {report['excluded_canary_items']} canary evaluation items left out" if report["excluded_canary_items"]
           else "") + ")[/dim]")
    return mixed, {"source": str(path), "fingerprint": fingerprint(path), **report}


def _tensorboard(run_dir: Path) -> list[Any]:
    """TensorBoard event files in RUN/tensorboard when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return []
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(RunFolder(run_dir).tensorboard)))]


def _failed(exc: BaseException, run: RunFolder, run_dir: Path, summary: RunSummary, trainer: Any,
            is_main: bool) -> None:
    """A training that failed: run.json says so; a full disk becomes its one-line error."""
    full = is_disk_full(exc, run.checkpoints if run.checkpoints.is_dir() else run_dir)
    step = trainer.state.global_step if trainer is not None else 0
    if is_main:
        # a checkpoint cut short is useless and holds the space run.json needs now
        cut = remove_incomplete_checkpoints(run_dir)
        try:
            write_summary(run_dir, summary.model_copy(update={
                "status": "failed", "error": str(exc)[:500], "steps": step}))
        except OSError:
            pass  # still no room: the error below matters more than the status
        if full:
            saving = f" while saving checkpoints/{cut[0].name}" if cut else ""
            raise OSError(errno.ENOSPC, f"no space left on device{saving} at step {step} ({_kept(run_dir)}); "
                          f"free some space and continue with: specialist train --out {run_dir} --resume",
                          str(run_dir)) from exc
