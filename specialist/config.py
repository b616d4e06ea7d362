"""Training's settings as a pydantic model: a YAML file, then command-line overrides on top.

A bad setting is reported as one located line (`config.yaml: lora_r: must be > 0 (got -1)`),
never a traceback: load_train_config raises ConfigError, which the CLI prints and exits 2."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from specialist.errors import ConfigError
from specialist.knowledge.retrieve import MIN_SHARE
from specialist.knowledge.snapshot import CONTEXT_CONTRAST
from specialist.models.registry import DEFAULT_MODEL

Method = Literal["lora", "dora", "qlora", "full"]
# Room for three retrieved passages before the question when training with a knowledge base.
KNOWLEDGE_MAX_LENGTH = 512
# Adapters start from zero and tolerate a large step; full fine-tuning moves the pretrained
# weights themselves, and 2e-4 there destabilises a small model (5e-5 is the usual full-SFT
# rate for models of a few hundred million parameters).
DEFAULT_LR = {"lora": 2e-4, "dora": 2e-4, "qlora": 2e-4, "full": 5e-5}


class TrainConfig(BaseModel):
    """Everything that decides a training run. The defaults make
    `specialist train --data examples/coffee/train.jsonl` finish in minutes on a 2-core CPU
    with the embedded 270M model (measured: see benchmarks/bench_train_speed.py)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train on
    data: Path = Field(description="training data (JSONL: prompt/completion or chat messages)")
    eval_data: Path | None = Field(None, description="held-out data for eval loss and best checkpoint")
    model: str = Field(DEFAULT_MODEL, description="base model reference")
    system_prompt: str | None = Field(None, description="system prompt added to examples that have none")

    # knowledge base: retrieved passages go into every prompt (retrieval-augmented fine-tuning)
    knowledge: Path | None = Field(None,
                                   description="knowledge base (Markdown/text file, folder, or JSONL of passages)")
    knowledge_top_k: int = Field(3, gt=0, le=20, description="passages retrieved into each prompt")
    knowledge_min_share: float = Field(MIN_SHARE, ge=0.0, le=1.0, description=(
        "bm25: of the top passages, leave out those scoring below this share of the best one's score "
        "(0 keeps all top k)"))
    knowledge_grounded_numbers: bool = Field(True, description=(
        "answers that read the knowledge base state only numbers their prompt (passages, question, system "
        "prompt) holds: enforced while decoding, in generate, chat, serve and eval"))
    knowledge_context_contrast: float = Field(CONTEXT_CONTRAST, ge=0.0, le=10.0, description=(
        "context-aware decoding for answers that read the knowledge base: each token scored by how much "
        "the passages raise it over the model's answer without them, this much (0: off; torch engine)"))
    retrieval: Literal["bm25", "dense", "hybrid"] = Field("bm25", description="how passages are ranked")
    embedding_model: str | None = Field(None, description="sentence-transformers model for dense/hybrid retrieval")
    abstain_share: float = Field(0.15, ge=0.0, lt=1.0, description=(
        "abstention examples added (share of the training examples): passages without the answer, an "
        "answer that offers to check instead of inventing"))
    abstain_related: float = Field(0.0, ge=0.0, le=1.0, description=(
        "share of the abstention examples whose passages are a near miss: what retrieval finds for the "
        "question once the passages holding its answer are gone (the rest get unrelated passages); off by "
        "default: on the coffee example it did not raise abstention and cost facts"))

    # general examples mixed in, against forgetting (specialist.data.general)
    mix_general: str | None = Field(None, description=(
        "general examples mixed into training: a JSONL of prompt/completion or chat messages, or `canary` "
        "for the shipped general examples (never the canary's evaluation items)"))
    mix_general_share: float = Field(0.1, gt=0.0, lt=1.0, description=(
        "share of the mixed training set that is general examples (with --mix-general)"))

    # method
    method: Method = "lora"
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"

    # optimisation
    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="optimizer steps; -1 = run the epochs")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(DEFAULT_LR["lora"], gt=0, lt=1, description=(
        "peak learning rate; default 2e-4 for adapters (lora, dora, qlora), 5e-5 for full fine-tuning"))
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_length: int = Field(256, ge=8, description=(
        f"examples longer than this (tokens) are truncated; default {KNOWLEDGE_MAX_LENGTH} with a knowledge base"))
    seed: int = 42

    # evaluation, checkpoints, logging
    eval_steps: int | None = Field(None, gt=0, description="evaluate every N steps; default: once per epoch")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N steps; default: once per epoch")
    save_total_limit: int = Field(2, gt=0)
    early_stopping_patience: int | None = Field(None, gt=0, description="evaluations without improvement")
    logging_steps: int = Field(5, gt=0)

    # speed and hardware
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="frozen base weights (and mixed precision on GPUs); auto = bf16 where fast")
    padding_free: bool = Field(True, description="concatenate a batch without padding (position_ids)")
    completion_only_head: bool = Field(True, description="LM head + loss only on completion tokens")
    output_head: Literal["generation", "kept", "full"] = Field("generation", description=(
        "a specialist-sized output head over the tokens this specialist can need (its data, knowledge base, "
        "their alphabet's short pieces, digits, punctuation): generation = generation projects only onto them "
        "(answers measured at eval parity); kept = training's loss too, the rest of the vocabulary counted "
        "by a sampled logit (1.78x faster training on short prompts, 1.07x with a knowledge base; held-out loss "
        "+0.5%; a coffee run with it answered 2 fact questions fewer than the full head's); "
        "full = the whole vocabulary everywhere. Full fine-tuning keeps the full head"))
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    threads: int | None = Field(None, gt=0, description="torch threads; default: physical cores")
    device: str = "auto"
    fsdp: str = Field("", description="FSDP options passed to transformers (e.g. 'full_shard auto_wrap')")

    # where
    out: Path | None = Field(None, description="run folder; default runs/<data name>-<method>")

    @model_validator(mode="before")
    @classmethod
    def _knowledge_needs_room(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("knowledge") and values.get("max_length") is None:
            return {**values, "max_length": KNOWLEDGE_MAX_LENGTH}
        return values

    @model_validator(mode="before")
    @classmethod
    def _lr_for_method(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("lr") is None and values.get("method") in DEFAULT_LR:
            return {**values, "lr": DEFAULT_LR[values["method"]]}
        return values

    def run_dir(self) -> Path:
        return self.out if self.out is not None else Path("runs") / f"{self.data.stem}-{self.method}"

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown setting"
    if kind == "missing":
        return "required setting is missing"
    got = err.get("input")
    msg = str(err.get("msg", "invalid value"))
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{msg} (got {got!r})" if not isinstance(got, (dict, list)) else msg


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, the first one first: `source: field: what is wrong`."""
    errors = exc.errors()
    first = errors[0]
    line = f"{source}: {_location(first['loc'])}: {_message(first)}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    if first.get("type") == "extra_forbidden":
        known = ", ".join(TrainConfig.model_fields)
        line += f"; known settings: {known}"
    return line


def parse_yaml(path: Path, text: str, invalid: str = "invalid YAML") -> Any:
    """yaml.safe_load (plain data only: a `!!python/object` tag is refused, never run), with the
    error located at the file's line."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = getattr(exc, "position", None)  # a ReaderError (a character YAML does not allow)
        if mark is not None:
            line = mark.line + 1
        else:
            line = text.count("\n", 0, position) + 1 if position is not None else None
        where = f"{path}:{line}" if line is not None else str(path)
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {invalid} ({problem})") from exc
    except RecursionError as exc:  # the composer recurses once per nesting level
        raise ConfigError(f"{path}: {invalid} (nested too deeply)") from exc


def read_yaml(path: Path) -> dict[str, Any]:
    from specialist.errors import SpecialistError
    from specialist.io import read_text

    try:
        text = read_text(Path(path))
    except SpecialistError as exc:
        raise ConfigError(str(exc)) from exc
    doc = parse_yaml(path, text)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value), got {type(doc).__name__}")
    return doc


def load_train_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Settings from a YAML file (optional) with overrides on top (None values are ignored, so
    CLI options left unset keep the file's or the default value). Relative data paths in the
    file are taken relative to the file."""
    values: dict[str, Any] = {}
    source = "settings"
    if path is not None:
        values = read_yaml(path)
        source = str(path)
        for key in ("data", "eval_data", "knowledge", "mix_general"):  # a config next to its data finds it from any cwd
            v = values.get(key)
            if isinstance(v, str) and v and not Path(v).is_absolute() and not Path(v).exists():
                candidate = Path(path).parent / v
                if candidate.exists():
                    values[key] = str(candidate)
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged = {**values, **cli}
    try:
        return TrainConfig(**merged)
    except ValidationError as exc:
        first_key = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        where = "command line" if first_key in cli else source
        raise ConfigError(format_validation_error(exc, where)) from exc
