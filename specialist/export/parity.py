"""The export's parity check: does the artefact behave like the run that was evaluated?

After an export is written, its artefact is run on the run's eval prompts (run.json's eval_data,
or --check-data) and compared with the run itself (the adapter on its base in PyTorch, greedy):

- template: the artefact puts the same prompt in front of the model as training did, byte for
  byte, and ends an answer with the same end-of-turn token.
    merged   the folder's tokenizer renders and encodes every conversation as the run's does;
    gguf     the file's chat template is the run's, and its EOS is one of the run's stop tokens;
    ollama   the Modelfile's TEMPLATE, rendered for each conversation by Ollama's rule (below),
             is the training prompt, an answer rendered by it ends with the end-of-turn token,
             and that token is one of the Modelfile's stops.
- prompt tokens: the artefact's own tokenizer (the GGUF's, for llama.cpp) encodes each eval
  prompt into the run's token ids.
- ends: every answer the run ends by itself (finish_reason "stop") the artefact ends by itself
  too. An answer the run itself cuts for length is counted and said, not blamed on the export.
- answers: the share of prompts answered exactly as the run did, the chrF of the artefact's
  answers against the run's, and the drop of the task metric (chrF against the references,
  accuracy too for label tasks), each within a stated tolerance.

Answers are compared for the merged folder (transformers, float32 like the run) and for the
GGUF when llama-cpp-python is installed (through the llama.cpp engine, tokenizer read from the
file); otherwise that part is recorded as skipped with its reason, never guessed. A knowledge
run's prompts are compared without retrieved context: the context travels in the user message,
which the template check covers.

How Ollama renders the TEMPLATE this exporter writes (no .Messages, so Ollama's legacy rule):
each earlier exchange (system, prompt, response) is rendered in full, the last one is cut at
{{ .Response }}; `{{ if .System }}A{{ else }}B{{ end }}` picks A when the exchange has a system
prompt. llama.cpp then adds BOS itself when the GGUF says add_bos_token. `ollama_prompt` is
that rule for the template's one shape; a TEMPLATE of another shape fails the check."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from specialist.errors import SpecialistError
from specialist.io import atomic_write_json
from specialist.models.template import (
    Message,
    build_messages,
    completion_suffix,
    encode_prompt,
    render_completion,
    render_prompt,
    stop_token_ids,
)

PARITY_FILE = "parity.json"
SAME = "same behaviour"
NO_LLAMA_CPP = "llama-cpp-python not installed"
# Conversations the template check always renders, whatever the eval data holds: with and
# without a system prompt. (Earlier turns come only from the eval data: the Modelfile's
# .System/.Prompt template joins exchanges without the text training puts between turns.)
PROBES: list[list[Message]] = [
    build_messages("Jak długo trwa wysyłka?"),
    build_messages("What is the capital of France?", system="Answer briefly."),
]

Status = Literal["pass", "fail", "skipped"]


@dataclass
class Tolerance:
    """How close the artefact's answers must be to the run's. Greedy decoding of the same
    weights gives the same answers; rounding (a bf16 merge, q8_0) may flip a token now and then."""

    min_identical: float = 0.75  # share of prompts answered exactly as the run did
    min_chrf: float = 90.0  # chrF (0-100) of the artefact's answers against the run's
    max_task_drop: float = 5.0  # task chrF may fall this many points (accuracy: this many %)


# llama.cpp's kernels round differently from PyTorch (and q8_0 rounds the weights), so greedy
# answers drift apart word by word even from a faithful GGUF: what must hold there is the
# task metric and the answers' closeness, not their identity.
LLAMA_CPP_TOLERANCE = Tolerance(min_identical=0.0, min_chrf=50.0, max_task_drop=5.0)


@dataclass
class CheckSettings:
    data: Path | None = None  # eval prompts; default: the run's eval_data
    limit: int = 16  # prompts answered (twice: run and artefact)
    max_new_tokens: int | None = None  # default: as eval, 1.5x the longest reference
    tolerance: Tolerance | None = None  # default: Tolerance() for merged, LLAMA_CPP_TOLERANCE for GGUF/Ollama

    def tolerance_for(self, fmt: str) -> Tolerance:
        return self.tolerance or (Tolerance() if fmt == "merged" else LLAMA_CPP_TOLERANCE)


@dataclass
class Check:
    artefact: str  # merged | gguf | ollama
    name: str  # template | prompt tokens | ends | answers
    status: Status
    detail: str  # what differs (or why skipped); "" when it passes
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parity:
    checks: list[Check]
    data: str | None  # where the prompts came from
    prompts: int
    tolerance: Tolerance

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def verdict(self) -> str:
        """One line: "same behaviour", or what differs."""
        if self.failed:
            return "differs: " + "; ".join(f"{c.artefact} {c.name}: {c.detail}" for c in self.failed)
        skipped = [f"{c.artefact} {c.name}: {c.detail}" for c in self.checks if c.status == "skipped"]
        return SAME + (f" (not checked: {'; '.join(dict.fromkeys(skipped))})" if skipped else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "ok": not self.failed,
            "data": self.data,
            "prompts": self.prompts,
            "tolerance": asdict(self.tolerance),
            "checks": [asdict(c) for c in self.checks],
        }


# ------------------------------------------------------------------ the prompts
NO_PROMPTS = "no eval prompts (the run recorded no eval_data; give --check-data FILE)"


def eval_conversations(model_ref: str, data: Path | None, limit: int) -> tuple[str | None, list[Any], str]:
    """(source, examples, why there are none): --check-data, else the run's recorded eval_data
    (as written or relative to the run folder)."""
    from specialist.data import load_examples
    from specialist.run_folder import RunFolder, read_summary

    if data is None and RunFolder(Path(model_ref)).summary.is_file():
        recorded = read_summary(model_ref).eval_data
        if recorded:
            data = next((p for p in (Path(recorded), Path(model_ref) / recorded) if p.exists()), None)
            if data is None:  # a run trained elsewhere: the export stands, its answers are not compared
                return None, [], f"the run's eval_data {recorded} is not here (give --check-data FILE)"
    if data is None:
        return None, [], NO_PROMPTS
    if not Path(data).exists():
        raise SpecialistError(f"{data}: no such file (--check-data)")
    return str(data), load_examples(data)[:limit], ""


def run_conversations(model_ref: str, examples: Sequence[Any]) -> list[list[Message]]:
    """The conversations the run was evaluated on: eval's fine-tuned contender, with the system
    prompt training added to every example (config.yaml), if any."""
    from specialist.evaluate.contenders import FINE_TUNED, Contender
    from specialist.run_folder import read_config

    system = read_config(model_ref).get("system_prompt") if Path(model_ref).is_dir() else None
    fine_tuned = Contender(FINE_TUNED, "fine-tuned", system)
    return [fine_tuned.messages(e) for e in examples]


# ------------------------------------------------------------------ Ollama's rendering
_SHAPE = re.compile(r"\{\{ if \.System \}\}(.*)\{\{ else \}\}(.*)\{\{ end \}\}\{\{ \.Response \}\}(.*)", re.S)
_FIELD = re.compile(r"\{\{ \.(System|Prompt) \}\}")


def ollama_prompt(template: str, messages: Sequence[Message]) -> str:
    """The text Ollama gives llama.cpp for `messages` with a Modelfile TEMPLATE of the shape
    export/ollama.py writes (see the module docstring); ValueError for any other shape."""
    shape = _SHAPE.fullmatch(template)
    if shape is None:
        raise ValueError("the TEMPLATE is not of the shape `specialist export` writes")
    with_system, without, after = shape.groups()

    def exchange(system: str, prompt: str, response: str, last: bool) -> str:
        values = {"System": system, "Prompt": prompt}
        body = _FIELD.sub(lambda m: values[m.group(1)], with_system if system else without)
        return body if last else body + response + after

    parts: list[str] = []
    system = prompt = response = ""
    for message in messages:
        role, content = message["role"], message["content"]
        if (role == "system" and (prompt or response)) or (role == "user" and response):
            parts.append(exchange(system, prompt, response, last=False))
            system = prompt = response = ""
        if role == "system":
            system = content
        elif role == "user":
            prompt = content
        elif role == "assistant":
            response = content
    parts.append(exchange(system, prompt, response, last=True))
    return "".join(parts)


def read_modelfile(path: Path) -> tuple[str, list[str]]:
    """(TEMPLATE, stops) of a Modelfile written by export/ollama.py."""
    text = path.read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""', text, re.S | re.M)
    stops = [json.loads(s) for s in re.findall(r'^PARAMETER stop (".*")$', text, re.M)]
    return (template.group(1) if template else ""), stops


def gguf_fields(path: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    wanted = (
        "tokenizer.chat_template",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.add_bos_token",
    )
    return {k: f.contents() for k, f in reader.fields.items() if k in wanted}


# ------------------------------------------------------------------ template checks
def _first_difference(a: str, b: str) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at character {i}: {a[max(0, i - 20) : i + 20]!r} vs {b[max(0, i - 20) : i + 20]!r}"


def merged_template(tokenizer: Any, folder: Path, conversations: Sequence[Sequence[Message]]) -> Check:
    from specialist.models.resolve import load_tokenizer

    exported = load_tokenizer(str(folder))
    eot, eot_export = completion_suffix(tokenizer), completion_suffix(exported)
    figures = {"conversations": len(conversations), "end_of_turn": eot, "end_of_turn_exported": eot_export}
    if eot != eot_export:
        return Check(
            "merged", "template", "fail", f"an answer ends with {eot_export!r}, not {eot!r} as in training", figures
        )
    if stop_token_ids(exported) != stop_token_ids(tokenizer):
        return Check("merged", "template", "fail", "the stop tokens differ from training's", figures)
    differ = [
        i
        for i, c in enumerate(conversations)
        if render_prompt(exported, c) != render_prompt(tokenizer, c)
        or encode_prompt(exported, c) != encode_prompt(tokenizer, c)
    ]
    figures["differing"] = len(differ)
    if differ:
        c = conversations[differ[0]]
        return Check(
            "merged",
            "template",
            "fail",
            f"the prompt differs from training's on {len(differ)} of {len(conversations)} conversations, "
            f"{_first_difference(render_prompt(exported, c), render_prompt(tokenizer, c))}",
            figures,
        )
    return Check("merged", "template", "pass", "", figures)


def gguf_template(tokenizer: Any, gguf_path: Path, artefact: str = "gguf") -> Check:
    fields = gguf_fields(gguf_path)
    stops = stop_token_ids(tokenizer)
    ends = [fields.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")]
    figures = {"eos_token_id": ends[0], "eot_token_id": ends[1], "stop_token_ids": stops}
    if fields.get("tokenizer.chat_template") != tokenizer.chat_template:
        return Check(
            artefact, "template", "fail", "the GGUF's chat template is not the one the run trained with", figures
        )
    if not any(e in stops for e in ends if e is not None):
        return Check(
            artefact,
            "template",
            "fail",
            f"the GGUF ends a turn on {ends[0]}, not on the run's stop tokens {stops}",
            figures,
        )
    return Check(artefact, "template", "pass", "", figures)


def modelfile_template(
    tokenizer: Any, folder: Path, conversations: Sequence[Sequence[Message]], completions: Sequence[str | None]
) -> Check:
    """Each conversation's training prompt vs the Modelfile TEMPLATE rendered by Ollama's rule
    (plus the BOS llama.cpp adds), and an answer rendered by it vs the trained answer."""
    template, stops = read_modelfile(folder / "Modelfile")
    gguf_path = next(folder.glob("*.gguf"))
    bos = (tokenizer.bos_token or "") if gguf_fields(gguf_path).get("tokenizer.ggml.add_bos_token") else ""
    eot_text = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer)[-1])
    figures: dict[str, Any] = {"conversations": len(conversations), "stops": stops, "end_of_turn": eot_text}
    if eot_text not in stops:
        return Check(
            "ollama", "template", "fail", f"the Modelfile does not stop on the end-of-turn token {eot_text!r}", figures
        )
    differ: list[tuple[str, str]] = []
    for messages, completion in zip(conversations, completions):
        try:
            shown = bos + ollama_prompt(template, messages)
            expected = render_prompt(tokenizer, messages)
            if shown == expected and completion is not None:  # the answer, then what the template closes it with
                shown += completion + ollama_answer_end(template)
                expected += render_completion(tokenizer, completion)
        except ValueError as exc:
            return Check("ollama", "template", "fail", str(exc), figures)
        if shown != expected:
            differ.append((shown, expected))
    figures["differing"] = len(differ)
    if differ:
        return Check(
            "ollama",
            "template",
            "fail",
            f"the Modelfile's prompt differs from training's on {len(differ)} of "
            f"{len(conversations)} conversations, {_first_difference(*differ[0])}",
            figures,
        )
    return Check("ollama", "template", "pass", "", figures)


def ollama_answer_end(template: str) -> str:
    """What the TEMPLATE writes after {{ .Response }}. The prompt is cut before it, so this is
    what the model must generate to end its answer: the end-of-turn token training taught."""
    shape = _SHAPE.fullmatch(template)
    return shape.group(3) if shape else ""


# ------------------------------------------------------------------ answers
def compare_answers(
    artefact: str,
    original: Sequence[Any],
    exported: Sequence[Any],
    original_prompt_ids: Sequence[Sequence[int]],
    exported_prompt_ids: Sequence[Sequence[int]],
    references: Sequence[str],
    tolerance: Tolerance,
) -> list[Check]:
    """The ends and answers checks (and prompt tokens, when the artefact tokenizes itself) of
    one artefact's Answers against the run's, prompt by prompt."""
    from specialist.evaluate.metrics import chrf, classification_scores, is_classification

    checks: list[Check] = []
    n = len(original)
    same_ids = sum(list(a) == list(b) for a, b in zip(original_prompt_ids, exported_prompt_ids))
    if same_ids < n:
        checks.append(
            Check(
                artefact,
                "prompt tokens",
                "fail",
                f"the prompt tokens differ from the run's on {n - same_ids} of {n} prompts",
                {"identical": same_ids},
            )
        )
    run_stops = [a.finish_reason == "stop" for a in original]
    export_stops = [a.finish_reason == "stop" for a in exported]
    lost = sum(r and not e for r, e in zip(run_stops, export_stops))
    figures = {"prompts": n, "run_stops": sum(run_stops), "export_stops": sum(export_stops), "lost_stop": lost}
    note = f" (the run itself runs out of tokens on {n - sum(run_stops)})" if sum(run_stops) < n else ""
    checks.append(
        Check(
            artefact,
            "ends",
            "fail" if lost else "pass",
            f"{lost} answers the run ends by itself run out of tokens{note}" if lost else note.strip(" ()"),
            figures,
        )
    )

    run_text, export_text = [a.text for a in original], [a.text for a in exported]
    identical = sum(a == b for a, b in zip(run_text, export_text)) / max(n, 1)
    similarity = chrf(export_text, run_text) if any(run_text) else (100.0 if not any(export_text) else 0.0)
    figures = {"identical": round(identical, 4), "chrf_vs_run": round(similarity, 2)}
    problems = []
    if identical < tolerance.min_identical:
        problems.append(f"{identical:.0%} of answers identical (< {tolerance.min_identical:.0%})")
    if similarity < tolerance.min_chrf:
        problems.append(f"chrF {similarity:.1f} against the run's answers (< {tolerance.min_chrf:g})")
    if references:
        task = {"chrf": (chrf(run_text, references), chrf(export_text, references))}
        if is_classification(references):
            task["accuracy"] = tuple(
                100 * classification_scores(t, references)["accuracy"] for t in (run_text, export_text)
            )
        for metric, (run_score, export_score) in task.items():
            figures[f"task_{metric}_run"], figures[f"task_{metric}_export"] = (
                round(run_score, 2),
                round(export_score, 2),
            )
            if run_score - export_score > tolerance.max_task_drop:
                problems.append(
                    f"task {metric} {export_score:.1f} vs the run's {run_score:.1f} "
                    f"(drop > {tolerance.max_task_drop:g})"
                )
    checks.append(Check(artefact, "answers", "fail" if problems else "pass", "; ".join(problems), figures))
    return checks


def _answer(
    generator: Any, conversations: Sequence[Sequence[Message]], max_new_tokens: int
) -> tuple[list[Any], list[list[int]]]:
    from specialist.inference.sampling import GenerationSettings

    answers = generator.generate(conversations, GenerationSettings(max_new_tokens=max_new_tokens), batch_size=1)
    return answers, [generator.prompt_ids(c) for c in conversations]


# ------------------------------------------------------------------ the check
def check_export(model_ref: str, fmt: str, out: Path, settings: CheckSettings | None = None) -> Parity:
    """Run the export in `out` against the run `model_ref` and write OUT/parity.json."""
    from specialist.evaluate.runner import default_max_new_tokens
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model, load_tokenizer

    settings = settings or CheckSettings()
    tolerance = settings.tolerance_for(fmt)
    out = Path(out)
    source, examples, missing = eval_conversations(model_ref, settings.data, settings.limit)
    tokenizer = load_tokenizer(model_ref)
    conversations = run_conversations(model_ref, examples)
    references = [e.completion for e in examples]
    probes = conversations + PROBES
    gguf_path = next(out.glob("*.gguf"), None)

    checks: list[Check] = []
    if fmt == "merged":
        checks.append(merged_template(tokenizer, out, probes))
    else:
        checks.append(gguf_template(tokenizer, gguf_path, fmt))
        if fmt == "ollama":
            checks.append(modelfile_template(tokenizer, out, probes, [*references, *[None] * len(PROBES)]))

    if not conversations:
        checks.append(Check(fmt, "answers", "skipped", missing or "the eval data holds no prompts"))
    elif fmt != "merged" and importlib.util.find_spec("llama_cpp") is None:
        checks.append(Check(fmt, "answers", "skipped", NO_LLAMA_CPP))
    else:
        max_new = settings.max_new_tokens or default_max_new_tokens(tokenizer, references)
        # the adapter on its base, over the whole vocabulary as the artefact holds it
        run = TorchGenerator(load_model(model_ref, dtype="float32", kept_head=False))
        original, original_ids = _answer(run, conversations, max_new)
        del run
        if fmt == "merged":
            artefact = TorchGenerator(load_model(str(out), dtype="float32"))
        else:
            from specialist.inference.engines import make_generator

            artefact = make_generator(str(gguf_path), engine="llama.cpp", max_batch=1)
        try:
            exported, exported_ids = _answer(artefact, conversations, max_new)
        finally:
            artefact.close()
        checks += compare_answers(fmt, original, exported, original_ids, exported_ids, references, tolerance)
    parity = Parity(checks, source, len(conversations), tolerance)
    atomic_write_json(out / PARITY_FILE, parity.as_dict())
    return parity
