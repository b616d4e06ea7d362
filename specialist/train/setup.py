"""The model, adapter and TrainingArguments a run trains with, decided in one place per device.

CPU with native bf16 (AMX/AVX-512-BF16): frozen base weights in bf16, LoRA weights in fp32,
bf16 autocast. Full fine-tuning keeps fp32 master weights and autocasts to bf16. CUDA: bf16 (or
fp16) mixed precision, sdpa or flash-attention, optional gradient checkpointing, QLoRA through
bitsandbytes."""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from specialist.config import TrainConfig
from specialist.errors import SpecialistError
from specialist.models import packed_attention
from specialist.models.device import available_cpus


@dataclass
class Precision:
    """load_dtype: how base weights are loaded. mixed: the Trainer's autocast flag (or None)."""

    load_dtype: torch.dtype
    mixed: str | None  # "bf16" | "fp16" | None


@dataclass
class ModelPlan:
    """Everything about the model decided from config + device, before anything is loaded."""

    device: torch.device
    precision: Precision
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    peft: dict[str, Any] | None = None  # LoraConfig kwargs, None for full fine-tuning


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def physical_cores() -> int:
    """Cores, not hyper-threads, that this process may use: one torch thread per core is
    fastest for training (a second thread per core only contends for the same AMX unit)."""
    available = available_cpus()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return available
    cores, package = set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return max(1, min(len(cores) or available, available))


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has spent busy, CPU seconds this process has spent), or
    None where /proc/stat is missing (not Linux)."""
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    ticks = [int(v) for v in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


class OtherLoad:
    """How many cores other processes keep busy: the machine's busy CPU time minus this
    process's own, over the time since the last reading. The load average cannot tell the two
    apart, and it lags a minute: a run that starts right after its own model preparation
    would read that work as a busy machine and start on too few threads."""

    def __init__(self) -> None:
        self._last = _cpu_seconds()
        self._at = time.monotonic()

    def cores(self, siblings: int = 0, min_window: float = 0.25) -> float:
        """Busy cores not ours since the last call (or construction); `siblings` more
        processes of this same run are assumed as busy as this one and not counted as other
        work. Waits until `min_window` seconds have passed so one reading is not all noise."""
        if min_window > 0:
            time.sleep(max(0.0, min_window - (time.monotonic() - self._at)))
        now, at = _cpu_seconds(), time.monotonic()
        if now is None or self._last is None:  # no /proc/stat: the load average, ours included
            try:
                return max(0.0, os.getloadavg()[0] - torch.get_num_threads() * (1 + siblings))
            except OSError:
                return 0.0
        elapsed = max(at - self._at, 1e-6)
        machine, own = (now[0] - self._last[0]) / elapsed, (now[1] - self._last[1]) / elapsed
        self._last, self._at = now, at
        return max(0.0, machine - own * (1 + siblings))


def default_threads(local_processes: int = 1, other_load: float | None = None) -> int:
    """Physical cores shared among this machine's training processes, minus the cores other
    work keeps busy right now (`other_load`, measured by OtherLoad when not given): with more
    busy threads than cores, every small op waits for a descheduled OpenMP thread (measured:
    a step 15x slower with 2 threads on 2 loaded cores than with 1)."""
    share = max(1, physical_cores() // max(1, local_processes))
    if other_load is None:
        other_load = OtherLoad().cores(siblings=max(0, local_processes - 1))
    return max(1, min(share, round(share - other_load / max(1, local_processes) + 0.49)))


def choose_precision(config: TrainConfig, device: torch.device) -> Precision:
    from specialist.models.device import cpu_supports_bf16

    wanted = config.dtype
    if device.type == "cuda":
        if wanted == "auto":
            wanted = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if wanted == "fp32":
            return Precision(torch.float32, None)
        mixed = "bf16" if wanted == "bf16" else "fp16"
        if config.method == "full":  # fp32 master weights, half-precision compute
            return Precision(torch.float32, mixed)
        return Precision(torch.bfloat16 if mixed == "bf16" else torch.float16, mixed)
    if wanted == "auto":
        wanted = "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"
    if wanted == "fp16":
        raise SpecialistError("dtype fp16 needs a CUDA GPU; on this device use bf16 or fp32")
    if wanted == "fp32":
        return Precision(torch.float32, None)
    # Full fine-tuning: fp32 master weights. Adapters: frozen bf16 base weights; the fp32
    # adapter weights meet bf16 activations under autocast (cheaper than casting activations
    # up to fp32 around every adapter, measured ~10% per step here).
    if config.method == "full":
        return Precision(torch.float32, "bf16")
    return Precision(torch.bfloat16, "bf16")


def attention_implementation(config: TrainConfig, device: torch.device) -> str:
    if config.attn_implementation != "auto":
        if config.attn_implementation == "flash_attention_2" and not has_package("flash_attn"):
            raise SpecialistError("attn_implementation flash_attention_2 needs the flash-attn package "
                                  "(pip install flash-attn)")
        return config.attn_implementation
    if device.type == "cuda" and has_package("flash_attn"):
        return "flash_attention_2"
    if config.padding_free:
        # each example of the flattened row attends to itself: no tokens x tokens masked square
        return packed_attention.register()
    return "sdpa"


def plan_model(config: TrainConfig, device: torch.device) -> ModelPlan:
    if config.method == "qlora" and device.type != "cuda":
        raise SpecialistError("method qlora needs a CUDA GPU (4-bit weights through bitsandbytes); "
                              "on this machine use --method lora, which is as fast here")
    precision = choose_precision(config, device)
    load_kwargs: dict[str, Any] = {"dtype": precision.load_dtype,
                                   "attn_implementation": attention_implementation(config, device)}
    if config.method == "qlora":
        if not has_package("bitsandbytes"):
            raise SpecialistError("method qlora needs bitsandbytes: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        compute = precision.load_dtype if precision.load_dtype != torch.float32 else torch.bfloat16
        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        load_kwargs["dtype"] = compute
    peft = None
    if config.method != "full":
        peft = {"r": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
                "target_modules": config.target_modules, "use_dora": config.method == "dora",
                "task_type": "CAUSAL_LM", "bias": "none"}
    return ModelPlan(device, precision, load_kwargs, peft)


def load_model_for_training(weights: str, plan: ModelPlan, config: TrainConfig) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(weights, use_safetensors=True, trust_remote_code=False,
                                                     **plan.load_kwargs)
    except (OSError, ValueError) as exc:
        raise SpecialistError(f"{config.model}: cannot load the model for training ({exc})") from exc
    model.config.use_cache = False
    if plan.peft is None:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    # autocast_adapter_dtype keeps the LoRA weights fp32 over bf16 base weights
    model = get_peft_model(model, LoraConfig(**plan.peft), autocast_adapter_dtype=True)
    if plan.precision.mixed is not None:
        _let_autocast_cast_adapter_inputs(model)
    return model


def _let_autocast_cast_adapter_inputs(model: Any) -> None:
    """PEFT casts every adapter's input to the adapter's fp32; under autocast the matmul casts
    it straight back to bf16. Two copies per adapter per step for nothing: leave it to autocast."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def training_arguments(config: TrainConfig, plan: ModelPlan, output_dir: Path, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(**training_arguments_kwargs(config, plan, output_dir, has_eval))


def training_arguments_kwargs(config: TrainConfig, plan: ModelPlan, output_dir: Path, has_eval: bool) -> dict[str, Any]:
    """The Trainer settings of a run; the only place they are decided."""
    def steps_or_epoch(n: int | None) -> tuple[str, int | None]:
        return ("steps", n) if n else ("epoch", None)

    save_strategy, save_steps = steps_or_epoch(config.save_steps)
    eval_strategy, eval_steps = steps_or_epoch(config.eval_steps) if has_eval else ("no", None)
    if has_eval:  # keeping the best checkpoint needs a checkpoint at every evaluation
        save_strategy, save_steps = eval_strategy, eval_steps
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy=save_strategy,
        save_steps=save_steps or 500,
        save_total_limit=config.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        seed=config.seed,
        data_seed=config.seed,
        bf16=plan.precision.mixed == "bf16",
        fp16=plan.precision.mixed == "fp16",
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        use_cpu=plan.device.type == "cpu",
        report_to="none",  # TensorBoard is attached as a callback when installed
        disable_tqdm=True,  # our own progress line (callbacks.MetricsCallback)
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        include_num_input_tokens_seen="all" if config.padding_free else "non_padding",
        train_sampling_strategy="random" if config.padding_free else "group_by_length",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        fsdp=config.fsdp or "",
    )
    if plan.device.type == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs["ddp_backend"] = "gloo"  # CPU processes talk over gloo (nccl is GPU-only)
    return kwargs
