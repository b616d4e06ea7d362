"""`specialist eval`: every contender answers the same held-out prompts; everything is measured.

Order of work: read the run and the data → load the base model once (with the run's adapter)
→ generate each contender's answers (adapter off for the base contenders) → held-out loss of
the references under each contender's prompt → a style classifier from the training
completions against the zero-shot base model's answers to training prompts → metrics →
report (report.py, html.py).

With a knowledge base (--knowledge, else the run's own snapshot) every prompt is retrieved for
once, before any contender answers; the +knowledge contenders get those passages in their
prompt, and every contender's answers are checked against the eval records' facts and the
knowledge base's numbers (facts.py).

Every contender answers on one engine (--engine, as chat and serve: auto takes llama.cpp where it
is installed), so their latencies compare: on llama.cpp the fine-tuned contenders from the run's
GGUF, the base contenders, the style classifier's generic answers and the canary's from the base
model's. The held-out losses are computed by torch on either."""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialist.console import err_console
from specialist.data.example import Example
from specialist.errors import SpecialistError
from specialist.evaluate import metrics as sim
from specialist.evaluate.answer_cache import cache_key, cached
from specialist.evaluate.contenders import (
    FINE_TUNED,
    PROMPT_ENGINEERING,
    ZERO_SHOT,
    Contender,
    Endpoint,
    Reply,
    adapter_enabled,
    answer_locally,
    knowledge_contenders,
    pick_shots,
    standard_contenders,
)
from specialist.evaluate.cost import break_even_by_price, break_even_by_time, usage_stats
from specialist.evaluate.examples import load_eval_examples
from specialist.evaluate.facts import NumberCheck, retrieval_recall, score_answers
from specialist.evaluate.loss import LossResult, heldout_loss
from specialist.evaluate.rules import Rule, load_rules, score_rules
from specialist.evaluate.style import StyleClassifier, dispersion, train_style_classifier, word_count
from specialist.io import read_text
from specialist.run_folder import RunFolder, RunSummary, read_config, read_merged_info, read_summary


@dataclass
class EvalSettings:
    model: str
    data: Path
    system_prompt: Path | None = None
    few_shot: int = 3
    rules: Path | None = None
    train_data: Path | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    batch_size: int = 8
    style_negatives: int = 64
    endpoint: str | None = None
    endpoint_model: str | None = None
    endpoint_name: str | None = None
    endpoint_api_key: str | None = None
    endpoint_http_client: Any = None  # tests pass a mock transport
    price_per_million_prompt_tokens: float | None = None
    train_price_per_hour: float | None = None
    dtype: str = "auto"
    engine: str = "auto"  # every contender's answers: auto, torch or llama.cpp (inference/engines.py)
    quant: str | None = None  # llama.cpp's GGUF type (None: the engine's default for this CPU)
    knowledge: Path | None = None  # default: the run's own knowledge snapshot, if any
    top_k: int | None = None       # default: the run's retrieval settings (3)
    knowledge_system_prompt: Path | None = None  # default: system_prompt_knowledge.txt next to --data
    grounded_numbers: bool | None = None  # +knowledge answers keep to their prompt's numbers; None: the run's setting
    context_contrast: float | None = None  # +knowledge answers: context-aware decoding's alpha; None: the run's
    cache: bool = True  # reuse the base model's answers from an earlier eval (answer_cache.py)
    # llama.cpp reads a contender's shared prompt start once, as chat and serve do. Off by default:
    # reading the start apart rounds differently, which moved prompt engineering's style adherence
    # by up to 4.8 points against torch (benchmarks/README.md), beyond the 2 points of parity
    prompt_cache: bool = False
    contenders: tuple[str, ...] | None = None  # only these (names); None: every contender
    canary: bool = True  # general ability on the shipped canary set, base vs specialist (canary.py)
    canary_max_new_tokens: int = 128  # room for an everyday answer of a few sentences
    canary_limit: int | None = None  # questions (and as many paragraphs) of the canary set; None: all


@dataclass
class RunInfo:
    path: Path
    base_model: str
    summary: RunSummary
    train_data: Path | None
    system_prompt: str | None  # the system prompt training added to examples, if any (config.yaml)


def read_run(path: str | Path) -> RunInfo:
    """The run folder's summary (run.json) and, when present, its resolved settings (config.yaml).
    A merged export (`export --format merged`) is evaluated like a full fine-tune of its base;
    the run it came from, when it is still there, gives its training data and system prompt."""
    run = Path(path)
    merged = read_merged_info(run) if not RunFolder(run).summary.is_file() else None
    if merged is not None:
        origin = Path(str(merged.get("source") or ""))
        if not RunFolder(origin).summary.is_file():
            return RunInfo(run, merged["base_model"], RunSummary(), None, None)
        summary = read_summary(origin)
        return RunInfo(run, merged["base_model"], summary, _existing(summary.dataset, origin),
                       read_config(origin).get("system_prompt"))
    summary = read_summary(run)
    if not summary.base_model:
        raise SpecialistError(f"{RunFolder(run).summary}: no base_model recorded")
    return RunInfo(run, summary.base_model, summary, _existing(summary.dataset, run),
                   read_config(run).get("system_prompt"))


def _existing(value: Any, run: Path) -> Path | None:
    """A recorded data path, taken as written or relative to the run folder."""
    if not value:
        return None
    for candidate in (Path(str(value)), run / str(value)):
        if candidate.exists():
            return candidate
    return None


def default_max_new_tokens(tokenizer: Any, references: Sequence[str]) -> int:
    """Room for the longest reference and half again (answers may be longer than the
    references; a base model that does not stop must not run for long)."""
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=32)
    return int(min(512, max(16, math.ceil(longest * 1.5) + 8)))


# ------------------------------------------------------------------ the run
@dataclass
class Inputs:
    run: RunInfo
    eval_examples: list[Example]
    train_examples: list[Example]
    system_prompt: str | None
    system_prompt_path: Path | None
    rules: list[Rule]
    rules_path: Path | None
    knowledge: Any = None  # a KnowledgeContext, or None: no +knowledge contenders
    knowledge_system_prompt: str | None = None
    knowledge_system_prompt_path: Path | None = None


def gather_inputs(s: EvalSettings) -> Inputs:
    run = read_run(s.model)
    eval_examples = load_eval_examples(s.data)
    if s.limit is not None:
        eval_examples = eval_examples[: s.limit]
    train_path = s.train_data or run.train_data
    if train_path is None:
        raise SpecialistError(f"{run.path}: the run records no training data that exists here; give --train-data "
                              "(few-shot examples and the style classifier are drawn from it)")
    train_examples = load_eval_examples(train_path)
    # Defaults next to the eval data (examples/coffee/system_prompt.txt, eval.yaml).
    system_path = s.system_prompt or _beside(s.data, "system_prompt.txt")
    rules_path = s.rules or _beside(s.data, "eval.yaml")
    system = read_text(system_path, "system prompt").strip() if system_path else None
    rules = load_rules(rules_path) if rules_path else []
    inputs = Inputs(run, eval_examples, train_examples, system, system_path, rules, rules_path)
    _add_knowledge(inputs, s)
    return inputs


def _add_knowledge(inputs: Inputs, s: EvalSettings) -> None:
    """The knowledge base (--knowledge wins over the run's snapshot) and the system prompt of
    prompt-engineering+knowledge: --knowledge-system-prompt, else system_prompt_knowledge.txt
    next to the data, else the normal one (which may still list facts)."""
    from specialist.knowledge.runtime import open_knowledge

    inputs.knowledge = open_knowledge(s.knowledge, str(inputs.run.path), top_k=s.top_k,
                                      grounded_numbers=s.grounded_numbers, context_contrast=s.context_contrast)
    if inputs.knowledge is None:
        if s.top_k is not None or s.knowledge_system_prompt is not None:
            err_console.print("[yellow]no knowledge base (give --knowledge, or a run trained with one): "
                              "--top-k / --knowledge-system-prompt ignored[/yellow]")
        return
    err_console.print(f"[dim]knowledge: {inputs.knowledge.origin}, {len(inputs.knowledge.kb)} passages, "
                      f"top {inputs.knowledge.settings.top_k}[/dim]")
    path = s.knowledge_system_prompt or _beside(s.data, "system_prompt_knowledge.txt")
    if path is not None:
        inputs.knowledge_system_prompt = read_text(path, "knowledge system prompt").strip()
        inputs.knowledge_system_prompt_path = path
    else:
        inputs.knowledge_system_prompt = inputs.system_prompt
        inputs.knowledge_system_prompt_path = inputs.system_prompt_path


@dataclass
class Retrieval:
    """One retrieval per eval prompt, shared by both +knowledge contenders."""

    hits: list[list[Any]]  # knowledge.retrieve.Hit per prompt, best first
    recall: float | None   # retrieval recall@k over the answerable records with facts
    numbers: NumberCheck   # the knowledge base's numbers (unsupported-number rate)

    @property
    def passages(self) -> list[list[Any]]:
        return [[h.passage for h in hits] for hits in self.hits]

    def describe(self, context: Any, examples: Sequence[Example]) -> dict[str, Any]:
        """report.json's top-level "knowledge": the base, the settings, recall and every prompt's hits."""
        return {**context.describe(), "retrieval_recall_at_k": self.recall,
                "retrieved": [{"prompt": p.prompt, "hits": [h.to_dict() for h in hits]}
                              for p, hits in zip(examples, self.hits)]}


def retrieve_all(context: Any, examples: Sequence[Example]) -> Retrieval:
    from specialist.knowledge.retrieve import passage_text

    hits = [context.retrieve(e.prompt) for e in examples]
    joined = ["\n".join(passage_text(h.passage) for h in hs) for hs in hits]
    recall = retrieval_recall(joined, [e.facts for e in examples], [e.answerable for e in examples])
    numbers = NumberCheck((passage_text(p) for p in context.kb.passages), context.retriever.language)
    return Retrieval(hits, recall, numbers)


def _beside(data: Path, name: str) -> Path | None:
    candidate = Path(data).parent / name
    if candidate.exists():
        err_console.print(f"[dim]using {candidate}[/dim]")
        return candidate
    return None


class Answerers:
    """Who answers: `base` for the base model's contenders (with the adapter off), `tuned` for
    the fine-tuned ones (on torch a LoRA run's two are one generator, the adapter toggled).
    `on` names the engine for the answer cache. The base's generator is made when first asked
    for: an eval whose base answers all come from the cache needs none."""

    def __init__(self, base: Callable[[], Any], tuned: Any, engine: str, quant: str | None, on: str) -> None:
        self._base = base
        self.tuned, self.engine, self.quant, self.on = tuned, engine, quant, on

    @functools.cached_property
    def base(self) -> Any:
        return self._base()


def answerers(s: EvalSettings, engine: str, run: RunInfo, base: Any, tuned: Any, answers_dtype: Any) -> Answerers:
    """The generators of `engine` (engines.choose_engine's). llama.cpp runs the run's GGUF (its
    merged weights, kept head) and the base model's own, both in one GGUF type."""
    from specialist.inference.engines import default_quant, make_generator
    from specialist.inference.llama_cpp_engine import require_llama_cpp
    from specialist.inference.torch_engine import TorchGenerator

    if engine == "torch":
        generators = {id(base): TorchGenerator(base), id(tuned): TorchGenerator(tuned)}
        return Answerers(lambda: generators[id(base)], generators[id(tuned)], "torch", None, str(answers_dtype))
    llama_cpp = require_llama_cpp()
    quant = s.quant
    if quant is None:
        quant, why = default_quant(llama_cpp)
        err_console.print(f"[dim]llama.cpp weights: {quant} ({why}; --quant to choose)[/dim]", highlight=False,
                          soft_wrap=True)
    def on_llama_cpp(ref: str) -> Any:
        return make_generator(ref, "llama.cpp", quant=quant, max_batch=s.batch_size, prompt_cache=s.prompt_cache)

    version = getattr(llama_cpp, "__version__", "?")
    return Answerers(lambda: on_llama_cpp(run.base_model), on_llama_cpp(str(run.path)), "llama.cpp", quant,
                     # a kept start rounds differently: its answers are not whole prompts' (runner.EvalSettings)
                     f"llama.cpp {version} {quant}" + (" prompt-cache" if s.prompt_cache else ""))


@dataclass
class ContenderResult:
    contender: Contender
    replies: list[Reply]
    loss: LossResult | None
    passages: list[list[str]] | None = None  # retrieved passage ids per prompt (+knowledge contenders)


def run_eval(s: EvalSettings) -> dict[str, Any]:
    """Evaluate and return the report document (see report.build_report)."""
    from specialist.evaluate.report import build_report
    from specialist.inference.engines import choose_engine
    from specialist.inference.precision import choose_path, load_for_generation
    from specialist.inference.sampling import GenerationSettings
    from specialist.models.device import cpu_features
    from specialist.models.resolve import resolve
    from specialist.models.template import encode_prompt

    inputs = gather_inputs(s)
    try:
        path = choose_path(s.dtype)
    except ValueError as exc:
        raise SpecialistError(f"--dtype: {exc}", exit_code=2) from exc
    source = resolve(str(inputs.run.path))
    engine = choose_engine(s.engine, s.dtype, s.quant, model_ref=str(inputs.run.path))
    if engine == "torch" and s.quant is not None:  # --engine torch, or SPECIALIST_ENGINE=torch
        raise SpecialistError("--quant applies to --engine llama.cpp (the GGUF the answers come from)", exit_code=2)
    what = "adapter" if source.adapter else "weights"
    err_console.print(f"[cyan]loading {inputs.run.base_model} with the run's {what}…[/cyan]")
    # on llama.cpp torch still computes the held-out losses, on this path
    err_console.print(f"[dim]{'generation' if engine == 'torch' else 'held-out loss'} path: {path.name} "
                      f"({path.reason})[/dim]", highlight=False)
    if path.int8 and engine == "torch":
        from specialist.inference.engines import INT8_WARNING

        err_console.print(INT8_WARNING)
    tuned = load_for_generation(source, path)
    # A LoRA run shares the base weights: one model, adapter toggled. A full fine-tune needs its base too.
    base = tuned if source.adapter is not None else load_for_generation(inputs.run.base_model, path)
    # int8 weights load as fp32: the cache tells the two apart by the path
    answers_dtype = "int8" if path.int8 else base.dtype
    tokenizer = tuned.tokenizer
    references = [p.completion for p in inputs.eval_examples]
    max_new = s.max_new_tokens or default_max_new_tokens(tokenizer, references)
    settings = GenerationSettings(max_new_tokens=max_new, seed=s.seed)
    shots = pick_shots(inputs.train_examples, s.few_shot, s.seed, exclude=inputs.eval_examples)
    contenders = standard_contenders(inputs.system_prompt, shots, fine_tuned=True)
    fine_tuned = contenders[-1]
    fine_tuned.system = inputs.run.system_prompt  # the short prompt exactly as trained
    retrieval = retrieve_all(inputs.knowledge, inputs.eval_examples) if inputs.knowledge is not None else None
    if retrieval is not None:
        contenders += knowledge_contenders(inputs.knowledge_system_prompt, shots, inputs.run.system_prompt)
    if s.contenders is not None:
        known = [c.name for c in contenders]
        unknown = [n for n in s.contenders if n not in known]
        if unknown:
            raise SpecialistError(f"--contenders: unknown {', '.join(unknown)}; this eval has {', '.join(known)}")
        contenders = [c for c in contenders if c.name in s.contenders]
    contexts = retrieval.passages if retrieval is not None else [()] * len(inputs.eval_examples)
    answer = answerers(s, engine, inputs.run, base, tuned, answers_dtype)

    def loaded_for(c: Contender) -> Any:
        return tuned if c.kind == "fine-tuned" else base

    def settings_for(c: Contender) -> GenerationSettings:
        # answers that read passages keep to the numbers of their prompt, as chat and serve do
        return inputs.knowledge.generation(settings) if c.knowledge else settings

    def compute(c: Contender, convs: list, advance: Callable[[int], None]) -> tuple[list[Reply], LossResult]:
        loaded = loaded_for(c)
        with adapter_enabled(loaded.model, c.kind == "fine-tuned"):
            generator = answer.tuned if c.kind == "fine-tuned" else answer.base
            replies = answer_locally(generator, convs, settings_for(c), s.batch_size, advance)
            return replies, heldout_loss(loaded.model, loaded.tokenizer, convs, references)

    results: list[ContenderResult] = []
    from_cache: list[str] = []
    base_weights = source.weights if source.adapter is not None else resolve(inputs.run.base_model).weights
    with _progress() as step:
        for c in contenders:
            convs = [c.messages(p, ctx) for p, ctx in zip(inputs.eval_examples, contexts)]
            advance = step(f"{c.name}: answering", len(convs))
            # the base model's answers do not depend on the run: kept for the next eval
            key = (cache_key(base_weights, c.name, convs, references, settings_for(c), s.batch_size, answer.on)
                   if c.kind == "base" else None)
            replies, loss, hit = cached(key, functools.partial(compute, c, convs, advance), advance, reuse=s.cache)
            if hit:
                from_cache.append(c.name)
            ids = [[p.id for p in ctx] for ctx in contexts] if c.knowledge else None
            results.append(ContenderResult(c, replies, loss, ids))
        if s.endpoint:
            if not s.endpoint_model:
                raise SpecialistError("--endpoint needs --endpoint-model NAME")
            endpoint = Endpoint(s.endpoint, s.endpoint_model, s.endpoint_api_key, s.endpoint_name,
                                http_client=s.endpoint_http_client)
            c = Contender(endpoint.name, "endpoint", inputs.system_prompt, shots)
            convs = [c.messages(p) for p in inputs.eval_examples]

            def count(messages: Any, text: str | None) -> int:
                if messages is not None:
                    return len(encode_prompt(tokenizer, messages))
                return len(tokenizer(text or "", add_special_tokens=False)["input_ids"])

            replies = endpoint.answer(convs, max_new, s.seed, count, step(f"{c.name}: answering", len(convs)))
            results.append(ContenderResult(c, replies, None))
        classifier = _style_classifier(inputs, base, lambda: answer.base, settings, s, step, base_weights,
                                       from_cache, answer.on)
        general = None
        if s.canary:
            from specialist.evaluate.canary import general_ability

            general = general_ability(base, tuned, lambda on: answer.tuned if on else answer.base,
                                      [p.completion for p in inputs.train_examples], inputs.run.system_prompt,
                                      s.seed, s.batch_size, step, base_weights, s.cache, s.canary_max_new_tokens,
                                      answer.on, s.canary_limit)

    usage = {r.contender.name: usage_stats([x.prompt_tokens for x in r.replies],
                                           [x.completion_tokens for x in r.replies],
                                           [x.latency for x in r.replies]) for r in results}
    by_name = {r.contender.name: r for r in results}
    metrics = {r.contender.name: contender_metrics(r, references, classifier, inputs.rules, usage[r.contender.name],
                                                   inputs.eval_examples, retrieval)
               for r in results}
    break_even = None
    train_seconds = inputs.run.summary.train_seconds
    if train_seconds is not None and PROMPT_ENGINEERING in usage and FINE_TUNED in usage:
        saved = usage[PROMPT_ENGINEERING]["prompt_tokens_mean"] - usage[FINE_TUNED]["prompt_tokens_mean"]
        if s.price_per_million_prompt_tokens is not None and s.train_price_per_hour is not None:
            break_even = break_even_by_price(train_seconds, s.train_price_per_hour, saved,
                                             s.price_per_million_prompt_tokens)
        else:
            prefill = by_name[PROMPT_ENGINEERING].loss
            break_even = break_even_by_time(train_seconds, saved, prefill.seconds_per_token if prefill else 0.0)
    knowledge = retrieval.describe(inputs.knowledge, inputs.eval_examples) if retrieval is not None else None
    if knowledge is not None:
        knowledge["system_prompt"] = (str(inputs.knowledge_system_prompt_path)
                                      if inputs.knowledge_system_prompt_path else None)
    doc = build_report(s, inputs, results, metrics, classifier, break_even, max_new, knowledge=knowledge)
    prompt_cache = bool(getattr(answer.tuned, "reuses_starts", False))
    doc["settings"]["generation"] = {**path.describe(), "cpu_features": sorted(cpu_features()),
                                     "engine": answer.engine, "quant": answer.quant, "prompt_cache": prompt_cache}
    if prompt_cache:
        doc["notes"].append("prompt cache: llama.cpp read the prompt start that a contender's requests share (its "
                            "system prompt and examples) once and kept it, as a server with prompt caching does; "
                            "latencies include that, the break-even does not assume it")
    doc["cached"] = from_cache  # base-model answers reused from an earlier eval (same prompts, settings, weights)
    doc["general_ability"] = general  # None with --no-canary
    return doc


def _style_classifier(inputs: Inputs, base: Any, generator: Callable[[], Any], settings: Any, s: EvalSettings,
                      step: Callable[[str, int], Callable[[int], None]], base_weights: str = "",
                      from_cache: list[str] | None = None, answers_dtype: Any = None) -> StyleClassifier:
    """Target style: the training completions. Generic: the zero-shot base model's answers to
    (a seeded sample of) the training prompts: what the model says before specialising."""
    n = min(s.style_negatives, len(inputs.train_examples))
    sample = random.Random(s.seed).sample(inputs.train_examples, n)
    zero = Contender(ZERO_SHOT, "base")
    convs = [zero.messages(p) for p in sample]
    advance = step("style classifier: generic answers", len(convs))

    def compute() -> tuple[list[Reply], None]:
        with adapter_enabled(base.model, False):
            return answer_locally(generator(), convs, settings, s.batch_size, advance), None

    key = cache_key(base_weights, "style-negatives", convs, [], settings, s.batch_size, answers_dtype or base.dtype)
    replies, _, hit = cached(key, compute, advance, reuse=s.cache)
    if hit and from_cache is not None:
        from_cache.append("style classifier (generic answers)")
    generic = [r.text for r in replies]
    try:
        return train_style_classifier([p.completion for p in inputs.train_examples], generic, seed=s.seed)
    except ValueError as exc:
        raise SpecialistError(f"style classifier: {exc}") from exc


def contender_metrics(result: ContenderResult, references: Sequence[str], classifier: StyleClassifier,
                      rules: Sequence[Rule], usage: dict[str, float], examples: Sequence[Example] = (),
                      retrieval: Retrieval | None = None) -> dict[str, Any]:
    texts = [r.text for r in result.replies]
    scores = classifier.scores(texts)
    lengths = dispersion([word_count(t) for t in texts])
    style = dispersion(scores)
    rule_results = score_rules(rules, texts)
    m: dict[str, Any] = sim.similarity_scores(texts, references)
    m.update({
        "style_adherence": classifier.adherence(texts),
        "style_score_mean": style["mean"],
        "style_score_spread": style["std"],
        "style_score_iqr": style["iqr"],
        "rule_pass_rate": rule_results.pass_rate if rule_results else None,
        "rule_all_pass_rate": rule_results.all_pass_rate if rule_results else None,
        "length_words_mean": lengths["mean"],
        "length_spread": lengths["std"],
        "length_iqr": lengths["iqr"],
        **usage,
        "eval_loss": result.loss.loss if result.loss else None,
        "perplexity": result.loss.perplexity if result.loss else None,
    })
    checked = score_answers(texts, examples, retrieval.numbers if retrieval is not None else None) if examples else None
    if checked is not None:
        m.update(checked.metrics)
        # one figure for the run, shown against the contenders whose prompts carry the passages
        m["retrieval_recall_at_k"] = retrieval.recall if retrieval is not None and result.contender.knowledge else None
    m["rules"] = rule_results.per_rule if rule_results else {}
    m["_facts"] = checked.per_answer if checked is not None else None  # per answer, moved by the report
    m["_style_scores"] = scores  # per-answer, moved into the answers by the report
    m["_rule_passes"] = rule_results.passed if rule_results else None
    return m


class _progress:
    """A rich progress bar on stderr; step(label, total) returns an advance(n) callback. When
    stderr is not a terminal (a log, CI, `make demo | tee`) a bar never draws until the end, so
    each step is a line when it starts and one when it is done instead: a long eval does not
    look stuck."""

    def __init__(self, console: Any = None) -> None:
        self.console = console or err_console

    def __enter__(self) -> Callable[[str, int], Callable[[int], None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        plain = not self.console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False, disable=plain)
        self.progress.__enter__()

        def step(label: str, total: int) -> Callable[[int], None]:
            if not plain:
                task = self.progress.add_task(label, total=total)
                return lambda n: self.progress.advance(task, n)
            self.console.print(f"{label}: {total}…", highlight=False)
            started, done = time.monotonic(), [0]

            def advance(n: int) -> None:
                before = done[0]
                done[0] += n
                if before < total <= done[0]:
                    seconds = time.monotonic() - started
                    self.console.print(f"{label}: {total}/{total} in {int(seconds // 60)}:{int(seconds % 60):02d}",
                                       highlight=False)

            return advance

        return step

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)
