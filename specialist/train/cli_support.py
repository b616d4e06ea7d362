"""What `specialist train` does around train(): settings from file + options, dry run, summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from specialist.config import TrainConfig, load_train_config
from specialist.errors import ConfigError
from specialist.run_folder import RunFolder, read_summary


def parse_set_options(items: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs; values are YAML scalars (0.05, true, [q_proj, v_proj])."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"command line: --set {item!r}: expected KEY=VALUE")
        try:
            parsed[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed[key.strip().replace("-", "_")] = value
    return parsed


def resolve_train_config(config_file: Path | None, set_options: Sequence[str], *, resume: bool,
                         out: Path | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """YAML file, then --set, then the named options. --resume reads the run's own
    config.yaml, so `specialist train --out RUN --resume` needs nothing else."""
    merged = {**parse_set_options(set_options), **{k: v for k, v in overrides.items() if v is not None}}
    if out is not None:
        merged["out"] = out
    if resume and config_file is None:
        if out is None:
            raise ConfigError("--resume needs --out RUN (the run folder to continue)")
        config_file = RunFolder(out).config
        if not config_file.exists():
            raise ConfigError(f"{out}: no run to resume (config.yaml missing); start it without --resume")
    if config_file is None and "data" not in merged:
        raise ConfigError("give --data FILE (training data) or --config FILE")
    return load_train_config(config_file, merged)


def show_dry_run(config: TrainConfig) -> None:
    from specialist.console import console
    from specialist.train.dry_run import dry_run, render_dry_run

    console.print(render_dry_run(dry_run(config)), highlight=False, soft_wrap=True)
    console.print("[dim]dry run: nothing was trained[/dim]")


def show_summary(run_dir: Path) -> None:
    from specialist.console import console, err_console
    from specialist.train.run import process_rank

    if process_rank()[0] != 0:  # under torchrun every process returns here; one reports
        return
    info = read_summary(run_dir)

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    err_console.print(
        f"[green]done[/green] {info.steps} steps in {info.train_seconds} s, "
        f"{info.tokens_per_second} tokens/s, train_loss {fmt(info.train_loss)}, "
        f"final_loss {fmt(info.final_loss)}, eval_loss {fmt(info.eval_loss)}")
    console.print(str(run_dir), markup=False, highlight=False)
