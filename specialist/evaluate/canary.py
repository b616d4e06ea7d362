"""General ability: what fine-tuning did to the base model outside its task, measured on the
canary set shipped with the package (specialist.data.general).

Two measures, base (adapter off) against specialist (adapter on), on the same conversations:
- held-out loss: mean NLL per token of the canary's everyday paragraphs (heldout.jsonl), per
  paragraph and overall, with the relative change;
- answer sanity: each everyday question (questions.jsonl) is answered greedily, and an answer is
  sane when it ends by itself (the model's stop, not the token limit), is in the question's
  language (data.language's detector; an answer too short to call passes), and carries none of
  the specialist's house phrases: word n-grams frequent in its training completions that the
  canary's own everyday text never uses (house_phrases).
Flips list the questions whose answer was sane from the base and is not from the specialist
(lost), and the reverse (gained).

The base model's answers and losses depend only on the base weights and the conversations: they
are kept in the answer cache like the other base contenders' (answer_cache.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from specialist.data.dedup import normalize
from specialist.data.general import CANARY_DIR, load_canary
from specialist.data.general import language as record_language
from specialist.evaluate.answer_cache import cache_key, cached
from specialist.evaluate.contenders import Reply, adapter_enabled, answer_locally
from specialist.evaluate.loss import LossResult, heldout_loss

# An everyday answer of a few sentences fits; a model that has not stopped by then has lost its stop.
MAX_NEW_TOKENS = 128
# A word n-gram is a house phrase when at least this share of the training completions use it
# (two-word phrases must be much more frequent: many are plain grammar).
HOUSE_MIN_SHARE = {2: 0.10, 3: 0.03, 4: 0.03}
HOUSE_MIN_COUNT = 3
MAX_HOUSE_PHRASES = 200


def _grams(text: str, n: int) -> set[str]:
    words = normalize(text).split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def house_phrases(completions: Sequence[str], general_texts: Sequence[str] = ()) -> list[str]:
    """The specialist's boilerplate: word 2-4-grams used by HOUSE_MIN_SHARE of the training
    completions and absent from `general_texts` (ordinary language: the canary's own text),
    most frequent first."""
    if not completions:
        return []
    ordinary = set().union(*(_grams(t, n) for t in general_texts for n in HOUSE_MIN_SHARE)) if general_texts else set()
    found: Counter[str] = Counter()
    for n, share in HOUSE_MIN_SHARE.items():
        counts = Counter(g for t in completions for g in _grams(t, n))
        least = max(HOUSE_MIN_COUNT, share * len(completions))
        found.update(
            {g: c for g, c in counts.items() if c >= least and g not in ordinary and any(ch.isalpha() for ch in g)}
        )
    return [g for g, _ in found.most_common(MAX_HOUSE_PHRASES)]


@dataclass
class Sanity:
    ends: bool  # stopped by itself with some text
    language: str | None  # detected; None: too short or unsure
    expected: str | None
    boilerplate: list[str] = field(default_factory=list)  # house phrases found

    @property
    def language_ok(self) -> bool | None:
        if self.language is None or self.expected is None:
            return None
        return self.language == self.expected

    @property
    def sane(self) -> bool:
        return self.ends and self.language_ok is not False and not self.boilerplate

    @property
    def problems(self) -> list[str]:
        out = [] if self.ends else ["did not end by itself"]
        if self.language_ok is False:
            out.append(f"language {self.language} (asked in {self.expected})")
        out += [f"house phrase “{p}”" for p in self.boilerplate]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ends": self.ends,
            "language": self.language,
            "language_ok": self.language_ok,
            "boilerplate": self.boilerplate,
            "sane": self.sane,
            "problems": self.problems,
        }


def check_answers(
    texts: Sequence[str], finish_reasons: Sequence[str], expected: Sequence[str | None], phrases: Sequence[str]
) -> list[Sanity]:
    from specialist.data.language import detect_languages

    found, _ = detect_languages(list(texts))
    checks = []
    for i, (text, reason, lang) in enumerate(zip(texts, finish_reasons, expected)):
        words = f" {normalize(text)} "
        checks.append(
            Sanity(
                ends=reason == "stop" and bool(text.strip()),
                language=found.get(i),
                expected=lang,
                boilerplate=[p for p in phrases if f" {p} " in words],
            )
        )
    return checks


def flips(base: Sequence[bool], specialist: Sequence[bool]) -> dict[str, list[int]]:
    """Indices of the questions the specialist lost (base sane, specialist not) and gained."""
    return {
        "lost": [i for i, (b, s) in enumerate(zip(base, specialist)) if b and not s],
        "gained": [i for i, (b, s) in enumerate(zip(base, specialist)) if s and not b],
    }


def _relative(new: float, old: float) -> float | None:
    return (new - old) / old if old else None


def build_section(
    questions: Sequence[Any],
    heldout: Sequence[Any],
    base: tuple[list[Reply], LossResult],
    tuned: tuple[list[Reply], LossResult],
    phrases: Sequence[str],
) -> dict[str, Any]:
    """report.json's "general_ability" (without timing and cache flags)."""
    expected = [record_language(q) for q in questions]
    checks = {
        name: check_answers([r.text for r in replies], [r.finish_reason for r in replies], expected, phrases)
        for name, (replies, _) in (("base", base), ("specialist", tuned))
    }
    flipped = flips([c.sane for c in checks["base"]], [c.sane for c in checks["specialist"]])
    (_, base_loss), (_, tuned_loss) = base, tuned

    def share(name: str, test: Callable[[Sanity], bool]) -> float:
        return sum(test(c) for c in checks[name]) / len(checks[name]) if checks[name] else 0.0

    answers = []
    for i, q in enumerate(questions):
        answers.append(
            {
                "id": q.meta.get("id"),
                "language": expected[i],
                "prompt": q.prompt,
                "reference": q.completion,
                **{
                    name: {
                        "answer": replies[i].text,
                        "finish_reason": replies[i].finish_reason,
                        **checks[name][i].to_dict(),
                    }
                    for name, (replies, _) in (("base", base), ("specialist", tuned))
                },
            }
        )
    return {
        "set": str(CANARY_DIR.name),
        "questions": len(questions),
        "paragraphs": len(heldout),
        "loss": {
            "base": base_loss.loss,
            "specialist": tuned_loss.loss,
            "relative_change": _relative(tuned_loss.loss, base_loss.loss),
            "per_example": [
                {
                    "id": h.meta.get("id"),
                    "language": record_language(h),
                    "base": b,
                    "specialist": t,
                    "relative_change": _relative(t, b),
                }
                for h, b, t in zip(heldout, base_loss.per_example, tuned_loss.per_example)
            ],
        },
        "sanity": {
            name: {
                "sane": share(name, lambda c: c.sane),
                "ends": share(name, lambda c: c.ends),
                "right_language": share(name, lambda c: c.language_ok is not False),
                "no_house_phrase": share(name, lambda c: not c.boilerplate),
            }
            for name in ("base", "specialist")
        },
        "flips": {
            kind: [
                {
                    "id": answers[i]["id"],
                    "prompt": answers[i]["prompt"],
                    "problems": answers[i]["base" if kind == "gained" else "specialist"]["problems"],
                }
                for i in idx
            ]
            for kind, idx in flipped.items()
        },
        "house_phrases": list(phrases),
        "answers": answers,
    }


def spread(items: Sequence[Any], n: int | None) -> list[Any]:
    """n items evenly spread over `items`, in order (all of them when n is None or not smaller):
    the canary files are grouped by language, so the first n would all be Polish."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(max(0, n))]


def general_ability(
    base: Any,
    tuned: Any,
    generator_for: Callable[[bool], Any],
    train_completions: Sequence[str],
    system: str | None,
    seed: int,
    batch_size: int,
    step: Callable[[str, int], Callable[[int], None]],
    base_weights: str = "",
    cache: bool = True,
    max_new_tokens: int = MAX_NEW_TOKENS,
    answers_dtype: Any = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Ask the canary questions and measure the canary paragraphs' loss with the base (`base`,
    adapter off) and the specialist (`tuned`, adapter on: the same object for a LoRA run);
    `generator_for(adapter on)`: who answers for each. `answers_dtype`: what the base's
    answers were computed in (the cache keeps int8 and each engine apart).
    `limit`: at most this many questions and as many paragraphs, spread over the set (see spread)."""
    from specialist.inference.sampling import GenerationSettings
    from specialist.models.template import build_messages

    started = time.perf_counter()
    canary = load_canary()
    questions, heldout = spread(canary.questions, limit), spread(canary.heldout, limit)
    q_convs = [build_messages(q.prompt, system) for q in questions]
    h_convs = [build_messages(h.prompt, system) for h in heldout]
    references = [h.completion for h in heldout]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=seed)

    def run(
        loaded: Any, enabled: bool, label: str
    ) -> tuple[Callable[[], tuple[list[Reply], LossResult]], Callable[[int], None]]:
        advance = step(f"general ability ({label}): answering", len(q_convs))

        def compute() -> tuple[list[Reply], LossResult]:
            with adapter_enabled(loaded.model, enabled):
                replies = answer_locally(generator_for(enabled), q_convs, settings, batch_size, advance)
                return replies, heldout_loss(loaded.model, loaded.tokenizer, h_convs, references)

        return compute, advance

    compute, advance = run(base, False, "base")
    key = cache_key(
        base_weights, "canary", [*q_convs, *h_convs], references, settings, batch_size, answers_dtype or base.dtype
    )
    base_replies, base_loss, hit = cached(key, compute, advance, reuse=cache)
    tuned_result = run(tuned, True, "specialist")[0]()
    ordinary = [f"{e.prompt}\n{e.completion}" for e in [*canary.eval_items, *canary.training]]
    phrases = house_phrases(train_completions, ordinary)
    section = build_section(questions, heldout, (base_replies, base_loss), tuned_result, phrases)
    section.update(
        {
            "system_prompt": system,
            "max_new_tokens": max_new_tokens,
            "limit": limit,
            "base_from_cache": hit,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return section


# ------------------------------------------------------------------ presentation
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def console_table(section: dict[str, Any]) -> Any:
    """The general-ability section as a rich table (with the flips below it)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"general ability: {section['questions']} everyday questions, "
        f"{section['paragraphs']} held-out paragraphs (canary set)"
    )
    table.add_column("measure")
    table.add_column("base", justify="right")
    table.add_column("specialist", justify="right")
    table.add_column("change", justify="right")
    loss = section["loss"]
    table.add_row(
        "held-out loss (nats/token)", f"{loss['base']:.3f}", f"{loss['specialist']:.3f}", _pct(loss["relative_change"])
    )
    labels = {
        "sane": "sane answers",
        "ends": "ends by itself",
        "right_language": "right language",
        "no_house_phrase": "no house phrase",
    }
    for key, label in labels.items():
        b, s = section["sanity"]["base"][key], section["sanity"]["specialist"][key]
        table.add_row(label, f"{b:.0%}", f"{s:.0%}", f"{(s - b) * 100:+.0f} pts")
    lines = [
        Text(
            f"lost (base sane, specialist not): {len(section['flips']['lost'])}; "
            f"gained: {len(section['flips']['gained'])}"
        )
    ]
    for kind in ("lost", "gained"):
        for f in section["flips"][kind]:
            lines.append(Text(f"  {kind} {f['id']}: {f['prompt']} ({'; '.join(f['problems'])})"))
    return Group(table, *lines)


def html_section(section: dict[str, Any] | None) -> str:
    import html

    if not section:
        return ""

    def e(value: Any) -> str:
        return html.escape(str(value))

    loss = section["loss"]
    rows = [
        f"<tr><th>held-out loss (nats/token)</th><td class='num'>{loss['base']:.3f}</td>"
        f"<td class='num'>{loss['specialist']:.3f}</td><td class='num'>{_pct(loss['relative_change'])}</td></tr>"
    ]
    for key, label in (
        ("sane", "sane answers"),
        ("ends", "ends by itself"),
        ("right_language", "right language"),
        ("no_house_phrase", "no house phrase"),
    ):
        b, s = section["sanity"]["base"][key], section["sanity"]["specialist"][key]
        rows.append(
            f"<tr><th>{label}</th><td class='num'>{b:.0%}</td><td class='num'>{s:.0%}</td>"
            f"<td class='num'>{(s - b) * 100:+.0f} pts</td></tr>"
        )
    flips_html = (
        "".join(
            f"<li><b>{kind}</b> {e(f['id'])}: {e(f['prompt'])} "
            f"<span class='wrong'>{e('; '.join(f['problems']))}</span></li>"
            for kind in ("lost", "gained")
            for f in section["flips"][kind]
        )
        or "<li>none</li>"
    )
    per_loss = "".join(
        f"<tr><td>{e(p['id'])}</td><td class='num'>{p['base']:.3f}</td>"
        f"<td class='num'>{p['specialist']:.3f}</td><td class='num'>{_pct(p['relative_change'])}</td></tr>"
        for p in loss["per_example"]
    )
    answers = "".join(
        f"<tr><td>{e(a['id'])}</td><td>{e(a['prompt'])}</td>"
        + "".join(
            f"<td>{e(a[n]['answer'])}<br><span class='{'ok' if a[n]['sane'] else 'wrong'}'>"
            f"{e('; '.join(a[n]['problems']) or 'sane')}</span></td>"
            for n in ("base", "specialist")
        )
        + "</tr>"
        for a in section["answers"]
    )
    phrases = ", ".join(f"“{e(p)}”" for p in section["house_phrases"][:30]) or "none"
    return f"""<h2>General ability (canary set)</h2>
<p>{section["questions"]} everyday questions and {section["paragraphs"]} held-out paragraphs in the examples'
languages, base model vs specialist, same conversations; {section["seconds"]} s.</p>
<table><tr><th></th><th>base</th><th>specialist</th><th>change</th></tr>{"".join(rows)}</table>
<h3>Flips</h3><ul>{flips_html}</ul>
<p class="dim">House phrases checked: {phrases}</p>
<details><summary>Loss per paragraph</summary><table><tr><th>id</th><th>base</th><th>specialist</th><th>change</th>
</tr>{per_loss}</table></details>
<details><summary>Answers</summary><table><tr><th>id</th><th>question</th><th>base</th><th>specialist</th></tr>
{answers}</table></details>
"""
