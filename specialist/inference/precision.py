"""The generation path in practice: load a model the way models.device.generation_path chose.

The int8 path keeps the embedding (and the whole model) in fp32 and swaps every Linear layer,
the output head included, for torch's dynamically quantized Linear: int8 weights, one scale per
output row, activations quantized per batch on the fly. Decoding a small model on a CPU reads
its weights once per token, so a quarter of fp32's bytes is most of the speed-up. A LoRA
adapter that stays attached (eval toggles it) keeps its own small A and B matrices in fp32
over the int8 base layer; a merged adapter is quantized with the weights it was merged into."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from specialist.models.device import GenerationPath, cpu_features, generation_path, pick_device
from specialist.models.resolve import LoadedModel, ModelSource, load_model


def int8_available() -> bool:
    """torch has a quantized engine for int8 Linear here (fbgemm/x86 on x86, qnnpack on ARM)."""
    engines = set(getattr(torch.backends.quantized, "supported_engines", ()))
    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    return bool(engines & {"x86", "fbgemm", "qnnpack"}) and hasattr(quantization, "quantize_dynamic")


def choose_path(dtype: str = "auto", device: str = "auto") -> GenerationPath:
    """This machine's generation path (`dtype` auto) or the one asked for."""
    return generation_path(cpu_features(), pick_device(device).type, dtype, int8_available())


def quantize_int8(model: Any) -> Any:
    """Int8 weights for every Linear of an fp32 `model` except a LoRA adapter's own, in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".lora_" not in f".{name}"
    }
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; its x86 int8 Linear is still the
        # one torch ships, and choose_path falls back to bf16/fp32 when it is gone
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)


def load_for_generation(
    ref: str | ModelSource, path: GenerationPath | None = None, device: str = "auto", merge_adapter: bool = False
) -> LoadedModel:
    """load_model on a generation path (default: this machine's); `.path` says which."""
    path = path or choose_path("auto", device)
    loaded = load_model(ref, dtype=path.dtype, device=device, merge_adapter=merge_adapter)
    if path.int8:
        loaded.model = quantize_int8(loaded.model)
    loaded.path = path
    return loaded
