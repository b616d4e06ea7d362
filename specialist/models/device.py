"""Device and dtype choices shared by training and inference, so the GPU path is the same code."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch


def available_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# The CPU features the precision choices depend on, as `specialist bench` reports them.
CPU_FEATURES = ("amx", "avx512_bf16", "avx512", "avx2", "vnni")
# /proc/cpuinfo flag -> feature
_FLAGS = {"amx_bf16": "amx", "amx_int8": "amx", "avx512_bf16": "avx512_bf16", "avx512f": "avx512", "avx2": "avx2",
          "avx512_vnni": "vnni", "avx_vnni": "vnni"}


def parse_cpu_features(cpuinfo: str) -> frozenset[str]:
    """The CPU_FEATURES named by the flags lines of a /proc/cpuinfo text."""
    flags = {f for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))
             for f in line.partition(":")[2].split()}
    return frozenset(feature for flag, feature in _FLAGS.items() if flag in flags)


# The features oneDNN (torch's CPU matmuls) may use under ONEDNN_MAX_CPU_ISA=<cap>. A capped
# oneDNN emulates bf16 where the CPU has it natively, so the precision choices must not count it.
_ISA_CAPS: dict[str, frozenset[str]] = {
    "SSE41": frozenset(), "AVX": frozenset(),
    "AVX2": frozenset({"avx2"}), "AVX2_VNNI": frozenset({"avx2", "vnni"}), "AVX2_VNNI_2": frozenset({"avx2", "vnni"}),
    "AVX512_CORE": frozenset({"avx2", "avx512"}), "AVX512_CORE_VNNI": frozenset({"avx2", "avx512", "vnni"}),
    "AVX512_CORE_BF16": frozenset({"avx2", "avx512", "vnni", "avx512_bf16"}),
    "AVX10_1_512": frozenset({"avx2", "avx512", "vnni", "avx512_bf16"}),
    "AVX512_CORE_FP16": frozenset({"avx2", "avx512", "vnni", "avx512_bf16"}),
}


@functools.cache
def cpu_features() -> frozenset[str]:
    """This machine's CPU_FEATURES (empty where /proc/cpuinfo cannot be read), less those that
    ONEDNN_MAX_CPU_ISA keeps torch's matmuls from using."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            found = parse_cpu_features(fh.read())
    except OSError:
        return frozenset()
    return usable_features(found, os.environ.get("ONEDNN_MAX_CPU_ISA"))


def usable_features(found: frozenset[str], onednn_max_cpu_isa: str | None) -> frozenset[str]:
    """`found` less what an ONEDNN_MAX_CPU_ISA value keeps oneDNN from using. No cap: unset,
    ALL, DEFAULT, an AMX level, or a value oneDNN does not know."""
    cap = _ISA_CAPS.get((onednn_max_cpu_isa or "").strip().upper())
    return found if cap is None else found & cap


@functools.cache
def cpu_name() -> str:
    """The CPU's model name, for benchmark figures ("" where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def cpu_supports_bf16() -> bool:
    """True where the CPU computes bf16 matmuls natively (AVX-512-BF16 or AMX): there bf16
    training is several times faster than fp32. Elsewhere bf16 on a CPU is emulated and slow."""
    return bool({"avx512_bf16", "amx"} & cpu_features())


@dataclass(frozen=True)
class GenerationPath:
    """How a model is run for generation: the dtype its weights load in, and whether its
    Linear layers then get int8 weights (activations quantized on the fly)."""

    name: str  # "bf16", "fp32", "fp16" or "int8"
    dtype: torch.dtype
    int8: bool
    reason: str

    def describe(self) -> dict[str, object]:
        return {"path": self.name, "dtype": str(self.dtype).removeprefix("torch."), "int8_weights": self.int8,
                "reason": self.reason}


GENERATION_DTYPES = ("auto", "int8", "bf16", "fp32")
# int8 would become the default where there is no AMX once `benchmarks/bench_engine_quality.py
# --paths bf16,int8` shows eval parity (each metric within 2 points). torch's dynamic int8 Linear
# (activations quantized per tensor) failed it on the coffee specialist (benchmarks/README.md)
INT8_BY_DEFAULT = False


def generation_path(features: frozenset[str] | set[str], device_type: str = "cpu", requested: str = "auto",
                    int8_available: bool = True, int8_default: bool = INT8_BY_DEFAULT) -> GenerationPath:
    """The generation path for a CPU with `features`: the one place this choice is made.

    Measured (benchmarks/README.md, "Generation path per CPU"): with AMX, bf16 runs on the
    matrix units and is the fastest path. Without AMX fp32 is the reference path: on a CPU with
    AVX-512-BF16 bf16 decodes 2.2x faster (unloaded) but its answers lost 6 points of fact
    accuracy on the coffee specialist, beyond eval parity. Int8 weights read a quarter of fp32's bytes per token
    and are faster again, but torch's dynamic int8 Linear changes this model's answers beyond
    eval parity: it runs only on request (--dtype int8), unless `int8_default`."""
    if requested not in GENERATION_DTYPES:
        raise ValueError(f"unknown dtype {requested!r}; use one of {', '.join(GENERATION_DTYPES)}")
    if requested == "int8":
        if device_type != "cpu" or not int8_available:
            raise ValueError("int8 weights need a CPU and torch's quantized Linear (x86 with AVX2, or ARM)")
        return GenerationPath("int8", torch.float32, True, "asked for (--dtype int8)")
    if requested != "auto":
        return GenerationPath(requested, pick_dtype(requested), False, f"asked for (--dtype {requested})")
    if device_type != "cpu":
        dtype = pick_dtype("auto", torch.device(device_type))
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
        return GenerationPath(name, dtype, False, f"{device_type}: its own half precision")
    if "amx" in features:
        return GenerationPath("bf16", torch.bfloat16, False, "AMX: bf16 matmuls on the matrix units")
    if int8_default and int8_available and features & {"avx2", "avx512"}:
        return GenerationPath("int8", torch.float32, True, "no AMX: int8 weights, a quarter of fp32's bytes per token")
    if "avx512_bf16" in features:
        return GenerationPath("fp32", torch.float32, False, "avx512_bf16 without AMX: bf16 decodes faster here but "
                              "failed eval parity on facts; --dtype bf16 or int8 to choose speed")
    return GenerationPath("fp32", torch.float32, False, "no native bf16" + ("; int8 weights with --dtype int8"
                                                                            if int8_available and features else ""))


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """'auto': bf16 on a GPU that has it (else fp16) and on a CPU that computes it natively;
    fp32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype != "auto":
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
        return names[dtype]
    device = device or pick_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return torch.float32
