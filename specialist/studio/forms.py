"""The training form, generated from specialist.config.TrainConfig: one labelled field per
setting with its default and description, validated by the same load_train_config the CLI
uses (so the same one-line ConfigError)."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from specialist.config import TrainConfig, load_train_config

# shown first; every other setting goes under "more settings"
MAIN = ("data", "eval_data", "model", "knowledge", "method", "epochs", "max_steps", "batch_size", "lr",
        "max_length", "lora_r", "lora_alpha")
HIDDEN = ("out",)  # the studio names the run folder itself


@dataclass
class FormField:
    name: str
    kind: str            # text, number, checkbox, select
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    step: str = "any"
    required: bool = False
    main: bool = False

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def shown_default(self) -> str:
        if self.default is None:
            return ""
        if isinstance(self.default, list):
            return ",".join(self.default)
        return str(self.default)


def _kind(annotation: Any) -> tuple[str, tuple[str, ...], str]:
    """(input kind, choices, number step) for a pydantic field annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _kind(non_none[0])
        return "text", (), ""  # e.g. list[str] | "all-linear"
    if origin is Literal:
        return "select", tuple(str(a) for a in args), ""
    if annotation is bool:
        return "checkbox", (), ""
    if annotation is int:
        return "number", (), "1"
    if annotation is float:
        return "number", (), "any"
    return "text", (), ""


def train_fields() -> list[FormField]:
    fields = []
    for name, info in TrainConfig.model_fields.items():
        if name in HIDDEN:
            continue
        kind, choices, step = _kind(info.annotation)
        fields.append(FormField(name, kind, None if info.is_required() else info.default, info.description or "",
                                choices, step, info.is_required(), name in MAIN))
    fields.sort(key=lambda f: (not f.main, MAIN.index(f.name) if f.main else 0))
    return fields


def parse_train_form(form: Mapping[str, Any], out: Path) -> TrainConfig:
    """Form values → TrainConfig. Empty fields keep the default; checkboxes arrive only when
    ticked (a hidden "present" marker says the form had them); "a,b" is a list for
    target_modules."""
    values: dict[str, Any] = {}
    for f in train_fields():
        raw = form.get(f.name)
        if f.kind == "checkbox":
            if f"{f.name}__present" in form:
                values[f.name] = raw is not None and raw not in ("", "off", "false")
            continue
        if raw is None or str(raw).strip() == "":
            continue
        text = str(raw).strip()
        if f.name == "target_modules" and text != "all-linear":
            values[f.name] = [t.strip() for t in text.split(",") if t.strip()]
        else:
            values[f.name] = text  # pydantic converts and validates "3" → 3.0 like the YAML path
    values["out"] = out
    return load_train_config(overrides=values)
