"""What each contender costs per request, and when fine-tuning pays for itself.

Break-even: fine-tuning shortens every request's prompt (no system prompt, no few-shot
examples). Each request therefore saves (prompt tokens of prompt engineering − prompt tokens
of the fine-tuned model) × (cost of one prompt token). Training is paid once, so the
break-even is the number of requests after which the savings equal the training cost:

    requests = training cost / (saved prompt tokens per request × cost per prompt token)

Two ways to price it, stated in the report:
- time (default): cost per prompt token = prefill seconds per token measured on this machine,
  training cost = the run's train_seconds;
- money: a price per million prompt tokens and a price per training hour."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's linear-interpolation percentile; 0.0 for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def usage_stats(prompt_tokens: Sequence[int], completion_tokens: Sequence[int],
                seconds: Sequence[float]) -> dict[str, float]:
    """Per-request means, latency median/p95 and generation throughput."""
    total_seconds = float(sum(seconds))
    return {
        "prompt_tokens_mean": float(np.mean(prompt_tokens)) if len(prompt_tokens) else 0.0,
        "completion_tokens_mean": float(np.mean(completion_tokens)) if len(completion_tokens) else 0.0,
        "latency_ms_p50": percentile(seconds, 50) * 1000.0,
        "latency_ms_p95": percentile(seconds, 95) * 1000.0,
        "throughput_tokens_per_s": float(sum(completion_tokens)) / total_seconds if total_seconds > 0 else 0.0,
    }


def break_even_requests(training_cost: float, saved_tokens_per_request: float, cost_per_token: float) -> int | None:
    """Requests needed for the per-request savings to repay the training cost (rounded up);
    None when fine-tuning saves nothing per request (it never pays back on prompt length)."""
    saving = saved_tokens_per_request * cost_per_token
    if saving <= 0 or not math.isfinite(saving):
        return None
    return math.ceil(training_cost / saving)


@dataclass
class BreakEven:
    requests: int | None
    unit: str                       # "seconds" or "USD"
    training_cost: float
    saved_prompt_tokens_per_request: float
    cost_per_prompt_token: float
    assumptions: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def break_even_by_time(train_seconds: float, saved_tokens_per_request: float,
                       prefill_seconds_per_token: float) -> BreakEven:
    return BreakEven(
        requests=break_even_requests(train_seconds, saved_tokens_per_request, prefill_seconds_per_token),
        unit="seconds", training_cost=train_seconds, saved_prompt_tokens_per_request=saved_tokens_per_request,
        cost_per_prompt_token=prefill_seconds_per_token,
        assumptions=(f"cost of a prompt token = prefill time measured on this machine "
                     f"({prefill_seconds_per_token * 1000:.3f} ms/token, the base model's forward pass over the "
                     f"prompt-engineering prompts); training cost = the run's train_seconds "
                     f"({train_seconds:.0f} s) on its own hardware; generated tokens cost the same for both "
                     f"and are left out; prompt caching is not assumed."),
    )


def break_even_by_price(train_seconds: float, train_price_per_hour: float, saved_tokens_per_request: float,
                        price_per_million_prompt_tokens: float) -> BreakEven:
    training_cost = train_seconds / 3600.0 * train_price_per_hour
    per_token = price_per_million_prompt_tokens / 1e6
    return BreakEven(
        requests=break_even_requests(training_cost, saved_tokens_per_request, per_token),
        unit="USD", training_cost=training_cost, saved_prompt_tokens_per_request=saved_tokens_per_request,
        cost_per_prompt_token=per_token,
        assumptions=(f"prompt tokens cost ${price_per_million_prompt_tokens:g} per million; training costs "
                     f"${train_price_per_hour:g} per hour × {train_seconds:.0f} s = ${training_cost:.4f}; "
                     f"generated tokens cost the same for both and are left out."),
    )
