"""The `specialist` command line: one small function per command over the stage packages.

Exit codes: 0 success, 1 the input has errors the command found and reported, 2 usage or
unreadable input. --json prints one JSON document on stdout; progress goes to stderr."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
from pathlib import Path

import typer

from specialist.console import console, err_console
from specialist.errors import Interrupted, SpecialistError, Terminated, interrupt_behind, interrupt_exit_code
from specialist.io import read_text
from specialist.models.registry import DEFAULT_MODEL

app = typer.Typer(
    help="Turn a general pre-trained language model into a specialist.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Base models: list and prepare.", no_args_is_help=True)
app.add_typer(models_app, name="models")

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m",
                        help="Model reference: run folder, HF folder, .gguf, HF id or known name.")
EngineOpt = typer.Option("auto", "--engine",
                         help="auto (llama.cpp where llama-cpp-python is installed and there is no GPU, else "
                              "torch; SPECIALIST_ENGINE sets it), torch (the trained weights on this CPU's "
                              "generation path, see --dtype) or llama.cpp (a GGUF: bf16 where native, else 8-bit).")
ThreadsOpt = typer.Option(None, "--threads", min=1,
                          help="CPU threads for decoding (default: all cores; fewer can be faster on a busy machine).")
QuantOpt = typer.Option(None, "--quant",
                        help="GGUF type llama.cpp runs when the model is not a .gguf: bf16 (default where this "
                             "CPU computes bf16 natively), q8_0 (default elsewhere), q4_0 (fastest, can break small "
                             "models) or f16.")
DtypeOpt = typer.Option("auto", "--dtype",
                        help="--engine torch's generation path: auto (this CPU's: bf16 with AMX, else fp32), bf16, "
                             "fp32, or int8 (int8 weights and activations: faster, but they degrade a small model's "
                             "answers).")
KnowledgeOpt = typer.Option(None, "--knowledge",
                            help="Knowledge base (Markdown/text file, folder, or JSONL of passages) retrieved into "
                                 "each question; default: the run's own, if it was trained with one.")
TopKOpt = typer.Option(None, "--top-k", min=1, max=20,
                       help="Passages retrieved per question (default: the run's setting, else 3).")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    # Library deprecation notices are for this project's developers, not its users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


# ---------------------------------------------------------------- models
@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Known base models; marks the embedded default and what is cached."""
    from specialist.models.registry import KNOWN_MODELS

    rows = [
        {"name": m.name, "default": m.name == DEFAULT_MODEL, "cached": m.is_cached(),
         "instruct": m.instruct, "source": m.source, "path": str(m.cache_path), "description": m.description}
        for m in KNOWN_MODELS.values()
    ]
    if as_json:
        _print_json({"models": rows})
        return
    from rich.table import Table

    table = Table(title="Known base models")
    for col in ("name", "default", "cached", "kind", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "✓" if r["default"] else "", "✓" if r["cached"] else "",
                      "instruct" if r["instruct"] else "base", r["description"])
    console.print(table)
    console.print("Also accepted: a run folder, a local Hugging Face folder, a .gguf file or a Hugging Face id.")


@models_app.command("prepare")
def models_prepare(model: str = typer.Argument(DEFAULT_MODEL, help="Model reference to prepare.")) -> None:
    """Assemble, convert and cache a base model (default: the embedded one)."""
    _quiet_libraries()
    from specialist.models.resolve import load_tokenizer, resolve

    source = resolve(model, prepare=True)
    load_tokenizer(source)  # proves the folder loads
    console.print(f"[green]ready[/green] {model} → {source.weights}")


# ---------------------------------------------------------------- generate / chat
@app.command()
def generate(
    model: str = ModelOpt,
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="One prompt."),
    input_file: Path | None = typer.Option(None, "--input", "-i",
                                           help="JSONL of prompts (\"prompt\" [+ \"system\"] or \"messages\", "
                                                "optional \"id\")."),
    output_file: Path | None = typer.Option(None, "--output", "-o",
                                            help="JSONL of answers; an existing one is resumed."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts decoded together (--input)."),
    system: str | None = typer.Option(None, "--system", help="System prompt text."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int | None = typer.Option(None, "--seed"),
    engine: str = EngineOpt,
    threads: int | None = ThreadsOpt,
    quant: str | None = QuantOpt,
    dtype: str = DtypeOpt,
    knowledge: Path | None = KnowledgeOpt,
    top_k: int | None = TopKOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Answer a prompt (--prompt) or a JSONL file of prompts (--input/--output) with a base model or a run."""
    if (prompt is None) == (input_file is None):
        raise typer.BadParameter("give either --prompt TEXT or --input FILE", param_hint="--prompt/--input")
    if input_file is not None and output_file is None:
        raise typer.BadParameter("--input needs --output FILE (answers are appended there, resumably)",
                                 param_hint="--output")
    _quiet_libraries()
    from specialist.inference.engines import make_generator
    from specialist.inference.sampling import GenerationSettings
    from specialist.models.template import build_messages

    context = _open_knowledge(model, knowledge, top_k)  # a bad knowledge base fails before the model loads
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    if context is not None:
        settings = context.generation(settings)
    # one prompt needs one sequence of llama.cpp's cache, a file a batch of them
    load = lambda: make_generator(model, engine, threads, quant, max_batch=batch_size if input_file else 1,  # noqa: E731
                                  dtype=dtype)
    if input_file is not None:
        _generate_file(model, load, input_file, output_file, settings, batch_size, system, as_json, context)
        return
    messages, hits = context.messages(prompt, system) if context else (build_messages(prompt, system), [])
    gen = load()
    answer = gen.generate([messages], settings)[0]
    passages = {"passages": [_hit_doc(h) for h in hits]} if context else {}
    if as_json:
        _print_json({"model": model, "prompt": prompt, "answer": answer.text,
                     "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                     "finish_reason": answer.finish_reason, "seconds": round(answer.seconds, 3), **passages})
    else:
        console.print(answer.text, markup=False, highlight=False)
        if context:
            err_console.print(f"passages: {', '.join(h.passage.id for h in hits) or '(none)'}",
                              style="dim", markup=False, highlight=False)


@app.command()
def chat(
    model: str = ModelOpt,
    system: Path | None = typer.Option(None, "--system-prompt", help="File with a system prompt."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int | None = typer.Option(None, "--seed"),
    max_context: int | None = typer.Option(None, "--max-context", min=16,
                                              help="Tokens of history + answer kept (default: the model's context, at "
                                                   "most 4096)."),
    engine: str = EngineOpt,
    threads: int | None = ThreadsOpt,
    quant: str | None = QuantOpt,
    dtype: str = DtypeOpt,
    knowledge: Path | None = KnowledgeOpt,
    top_k: int | None = TopKOpt,
) -> None:
    # one line on purpose: typer keeps a docstring's line breaks in the command list
    """Interactive chat with streamed answers (/sources shows the passages behind the last answer, /reset clears the history, /exit quits)."""  # noqa: E501
    _quiet_libraries()
    from specialist.inference.engines import make_generator
    from specialist.inference.sampling import GenerationSettings
    from specialist.serve.chat import ChatSession, PromptTooLong

    system_text = read_text(system).strip() if system else None
    context = _open_knowledge(model, knowledge, top_k)
    generator = make_generator(model, engine, threads, quant, max_batch=1, context_length=max_context, dtype=dtype)
    session = ChatSession(generator, system_text, min(max_context or 4096, generator.context_length),
                          GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                             top_p=top_p, seed=seed), knowledge=context)
    sources = " /sources shows the passages behind the last answer," if context else ""
    err_console.print(f"[bold]{model}[/bold] ready.{sources} /reset clears the history, /exit quits.")
    while True:
        try:
            line = input("you> ")
        except Terminated:
            raise
        except (EOFError, KeyboardInterrupt):
            print()
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            session.reset()
            err_console.print("[dim]history cleared[/dim]")
            continue
        if text == "/sources":
            _print_sources(session)
            continue
        sys.stdout.write("bot> ")
        sys.stdout.flush()
        try:
            session.ask(text, lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        except PromptTooLong as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        except Terminated:
            raise
        except KeyboardInterrupt:
            err_console.print("[dim](answer interrupted, not kept in the history)[/dim]")
        sys.stdout.write("\n")
        sys.stdout.flush()


def _open_knowledge(model: str, knowledge: Path | None, top_k: int | None):
    """The knowledge base generate/chat/serve retrieve from (--knowledge, else the run's own,
    else none), announced in one line on stderr."""
    from specialist.knowledge.runtime import open_knowledge

    context = open_knowledge(knowledge, model, top_k)
    if context is None:
        if top_k is not None:
            raise SpecialistError(f"--top-k needs a knowledge base: {model} was not trained with one; "
                                  "add --knowledge PATH")
        return None
    d = context.describe()
    err_console.print(f"knowledge: {d['passages']} passages from {d['origin']} "
                      f"(top {d['top_k']}, {d['method']}, fingerprint {d['fingerprint'].split(':')[-1][:12]})",
                      style="dim", markup=False, highlight=False, soft_wrap=True)
    return context


def _hit_doc(hit) -> dict:
    return {"id": hit.passage.id, "score": round(float(hit.score), 4), "title": hit.passage.title}


def _print_sources(session) -> None:
    if session.knowledge is None:
        err_console.print("[dim]no knowledge base: answers come from the model alone[/dim]")
    elif not session.last_hits:
        err_console.print("[dim]no answer yet[/dim]")
    for h in session.last_hits:
        err_console.print(f"[{h.rank}] {h.passage.id} ({h.score:.2f}) {h.passage.title}: "
                          f"{' '.join(h.passage.text.split())[:160]}", style="dim", markup=False, highlight=False)


# ---------------------------------------------------------------- data
data_app = typer.Typer(help="Training data: check, split, convert.", no_args_is_help=True)
app.add_typer(data_app, name="data")
FormatOpt = typer.Option(None, "--format", "-f",
                         help="File format: jsonl, json, csv, tsv, parquet, hf (default: detected).")


@data_app.command("check")
def data_check(
    data: Path = typer.Argument(..., help="Dataset file (JSONL, JSON, CSV, TSV, Parquet) or saved dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    html_path: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    model: str | None = typer.Option(None, "--model", "-m", help="Tokenizer for token counts and truncation checks."),
    max_length: int | None = typer.Option(None, "--max-length", min=8,
                                          help="Training max length in tokens (default: train's)."),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="Evaluation set to check for leakage."),
    format: str | None = FormatOpt,
    price: float | None = typer.Option(None, "--price-per-million", min=0.0,
                                       help="API fine-tuning price per million tokens (default: 5.0)."),
    tokens_per_second: float | None = typer.Option(None, "--tokens-per-second", min=0.001,
                                                   help="Assumed training speed for the time estimate (default: 170)."),
    epochs: float | None = typer.Option(None, "--epochs", min=0.01,
                                        help="Epochs for time and cost (default: train's)."),
    max_errors: int = typer.Option(1000, "--max-errors", min=1, help="Stop after this many errors."),
    max_record_bytes: int = typer.Option(1 << 20, "--max-record-bytes", min=64,
                                         help="Records larger than this are errors."),
    knowledge: Path | None = typer.Option(None, "--knowledge",
                                          help="Knowledge base (file, folder, JSONL or a run folder): warn about "
                                               "answers' numbers and names it contradicts or lacks."),
) -> None:
    """Validate and measure a dataset: errors (file:line:field), warnings, statistics. Exit 1 when errors."""
    if model:
        _quiet_libraries()
    from specialist.data.check import CheckSettings, run_check
    from specialist.data.report import print_report, write_html

    settings = CheckSettings(format=format, model=model, max_length=max_length, eval_data=eval_data, epochs=epochs,
                             max_errors=max_errors, max_record_bytes=max_record_bytes, knowledge=knowledge)
    if tokens_per_second is not None:
        settings.tokens_per_second = tokens_per_second
    if price is not None:
        settings.price_per_million = price
    report = run_check(data, settings, progress=lambda msg: err_console.print(f"[dim]{msg}…[/dim]"))
    if html_path is not None:
        write_html(report, html_path)
        err_console.print(f"HTML report: {html_path}")
    if as_json:
        _print_json(report.to_json())
    else:
        print_report(report, console)
    raise typer.Exit(report.exit_code)


@data_app.command("split")
def data_split(
    data: Path = typer.Argument(..., help="Dataset to split."),
    eval_fraction: float = typer.Option(..., "--eval-fraction", help="Share of records for evaluation, e.g. 0.1."),
    out: Path = typer.Option(..., "--out", help="Folder for train.jsonl and eval.jsonl."),
    seed: int = typer.Option(0, "--seed"),
    format: str | None = FormatOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Train/eval split; near-duplicates stay on one side, so evaluation never leaks."""
    from specialist.data.split import split_dataset

    result = split_dataset(data, eval_fraction, out, seed=seed, format=format, overwrite=overwrite)
    console.print(f"{result.train_path}: {len(result.train)} records; {result.eval_path}: {len(result.eval)} records "
                  f"({result.clusters} near-duplicate clusters kept on one side)", highlight=False)


@data_app.command("convert")
def data_convert(
    data: Path = typer.Argument(..., help="Dataset to convert."),
    to: str = typer.Option(..., "--to", help="prompt-completion, chat or openai."),
    out: Path = typer.Option(..., "--out", help="Output JSONL file."),
    format: str | None = FormatOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Convert a dataset to prompt-completion, chat or OpenAI chat fine-tuning JSONL."""
    from specialist.data.convert import convert_dataset

    written, notes = convert_dataset(data, to, out, format=format, overwrite=overwrite)
    console.print(f"{out}: {written} records ({to})", highlight=False)
    for note in notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")


# ---------------------------------------------------------------- knowledge
knowledge_app = typer.Typer(help="A specialist's knowledge base: search, check.", no_args_is_help=True)
app.add_typer(knowledge_app, name="knowledge")


@knowledge_app.command("search")
def knowledge_search(
    query: str = typer.Argument(..., help="The question to retrieve passages for."),
    knowledge: Path = typer.Option(..., "--knowledge",
                                   help="Knowledge base (Markdown/text file, folder, JSONL) or a run folder (its "
                                        "snapshot)."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Passages to show (default: 3, or the run's)."),
    method: str | None = typer.Option(None, "--method", help="bm25 (default), dense or hybrid."),
    embedding_model: str | None = typer.Option(None, "--embedding-model",
                                               help="sentence-transformers model for dense/hybrid."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The passages a specialist would retrieve for QUERY, best first, with scores."""
    from specialist.knowledge.runtime import open_knowledge, run_folder_of

    run = run_folder_of(str(knowledge))
    context = (open_knowledge(None, str(run), top_k, method, embedding_model) if run is not None
               else open_knowledge(knowledge, None, top_k, method, embedding_model))
    if context is None:
        raise SpecialistError(f"{knowledge}: the run was trained without a knowledge base (no knowledge/ snapshot)")
    hits = context.retrieve(query)
    if as_json:
        _print_json({"query": query, "knowledge": context.describe(), "hits": [h.to_dict() for h in hits]})
        return
    from rich.markup import escape
    from rich.table import Table

    d = context.describe()
    table = Table(title=f"{escape(d['origin'])}: {d['passages']} passages, {d['method']}", show_lines=True, expand=True)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("passage (file:line)", ratio=1, overflow="fold")
    table.add_column("text", ratio=2)
    for h in hits:
        title = f"[bold]{escape(h.passage.title)}[/bold]\n" if h.passage.title else ""
        table.add_row(str(h.rank), f"{h.score:.3f}", f"{escape(h.passage.id)}\n[dim]{escape(h.passage.location)}[/dim]",
                      title + escape(h.passage.text))
    console.print(table)


@knowledge_app.command("check")
def knowledge_check(
    knowledge: Path = typer.Argument(..., help="Knowledge base (Markdown/text file, folder, JSONL) or a run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Passages, sizes, located errors (exit 1), duplicates, conflicting numbers, passages too long or short."""
    from specialist.knowledge.check import check_knowledge, print_knowledge_report

    report = check_knowledge(knowledge)
    if as_json:
        _print_json(report.to_json())
    else:
        print_knowledge_report(report, console)
    raise typer.Exit(report.exit_code)


# ---------------------------------------------------------------- train
@app.command()
def train(
    data: Path | None = typer.Option(None, "--data", help="Training data (JSONL: prompt/completion or chat messages)."),
    eval_data: Path | None = typer.Option(None, "--eval-data",
                                          help="Held-out data: eval loss, best checkpoint, early stopping."),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Base model reference (default {DEFAULT_MODEL})."),
    method: str | None = typer.Option(None, "--method", help="lora (default), dora, qlora (CUDA) or full."),
    epochs: float | None = typer.Option(None, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    max_length: int | None = typer.Option(None, "--max-length"),
    lora_r: int | None = typer.Option(None, "--lora-r"),
    lora_alpha: int | None = typer.Option(None, "--lora-alpha"),
    seed: int | None = typer.Option(None, "--seed"),
    knowledge: Path | None = typer.Option(None, "--knowledge",
                                          help="Knowledge base (Markdown/text file, folder, or JSONL of passages): "
                                               "retrieved passages go into every prompt; the run keeps a snapshot."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, max=20,
                                     help="Passages retrieved into each prompt (default 3)."),
    mix_general: str | None = typer.Option(None, "--mix-general",
                                           help="General examples mixed into training against forgetting: a JSONL "
                                                "of prompt/completion or chat messages, or `canary` for the shipped "
                                                "ones."),
    mix_share: float | None = typer.Option(None, "--mix-share", min=0.0, max=1.0,
                                           help="Share of the training set that is general examples (default 0.1)."),
    config_file: Path | None = typer.Option(None, "--config", help="YAML settings; command-line options win."),
    settings: list[str] = typer.Option([], "--set",
                                       help="Any other setting, KEY=VALUE (e.g. --set lora_dropout=0.05)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/<data>-<method>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Show settings, the training set's size and kept vocabulary, and one example as "
                                      "training sees it (tokenized, with its passages), then exit."),
) -> None:
    """Fine-tune a base model on a dataset; writes a run folder (adapter, metrics, loss curve)."""
    _quiet_libraries()
    from specialist.train.cli_support import resolve_train_config, show_dry_run, show_summary

    config = resolve_train_config(
        config_file, settings, resume=resume, out=out,
        overrides=dict(data=data, eval_data=eval_data, model=model, method=method, epochs=epochs,
                       max_steps=max_steps, batch_size=batch_size, lr=lr, max_length=max_length,
                       lora_r=lora_r, lora_alpha=lora_alpha, seed=seed, knowledge=knowledge, knowledge_top_k=top_k,
                       mix_general=mix_general, mix_general_share=mix_share))
    if dry_run:
        show_dry_run(config)
        return
    from specialist.train import train as run_training

    show_summary(run_training(config, overwrite=overwrite, resume=resume))


# ---------------------------------------------------------------- eval
@app.command("eval")
def eval_command(
    model: Path = typer.Option(..., "--model", "-m",
                               help="Run folder written by `specialist train`, or its "
                                    "`export --format merged` folder."),
    data: Path = typer.Option(..., "--data", help="Held-out examples (JSONL prompt/completion or chat)."),
    system_prompt: Path | None = typer.Option(None, "--system-prompt",
                                              help="System prompt file for prompt engineering (default: "
                                                   "system_prompt.txt next to --data)."),
    few_shot: int = typer.Option(3, "--few-shot", min=0,
                                 help="Few-shot examples from the training set for prompt engineering."),
    rules: Path | None = typer.Option(None, "--rules",
                                      help="Eval config with style rules (default: eval.yaml next to --data)."),
    train_data: Path | None = typer.Option(None, "--train-data",
                                           help="Training data (default: the one the run recorded)."),
    json_path: Path | None = typer.Option(None, "--json",
                                          help="Where to write report.json (default RUN/eval/report.json)."),
    html_path: Path | None = typer.Option(None, "--html",
                                          help="Where to write report.html (default RUN/eval/report.html)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N prompts."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1,
                                              help="Default: 1.5× the longest reference."),
    seed: int = typer.Option(0, "--seed", help="Few-shot draw, classifier folds; the same seed gives the same report."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    style_negatives: int = typer.Option(64, "--style-negatives", min=2,
                                        help="Generic answers the style classifier learns from."),
    endpoint: str | None = typer.Option(None, "--endpoint",
                                        help="OpenAI-compatible base URL (e.g. http://host:8000/v1) as an extra "
                                             "contender."),
    endpoint_model: str | None = typer.Option(None, "--endpoint-model", help="Model name at --endpoint."),
    endpoint_name: str | None = typer.Option(None, "--endpoint-name", help="Contender name (default: the model name)."),
    endpoint_api_key: str | None = typer.Option(None, "--endpoint-api-key", envvar="SPECIALIST_ENDPOINT_API_KEY"),
    price_per_mtok: float | None = typer.Option(None, "--price-per-mtok", min=0,
                                                help="Price of 1M prompt tokens: break-even in money (with "
                                                     "--train-price-per-hour)."),
    train_price_per_hour: float | None = typer.Option(None, "--train-price-per-hour", min=0),
    dtype: str = typer.Option("auto", "--dtype", help="Generation path: auto (this CPU's: bf16 with AMX, else "
                                                       "fp32), bf16, fp32 or int8 (faster, degrades answers)."),
    engine: str = typer.Option("auto", "--engine",
                               help="Engine every contender answers on: auto (as chat and serve: llama.cpp where "
                                    "it is installed, else torch), torch, or llama.cpp (the run's GGUF and the base "
                                    "model's; held-out losses stay on torch)."),
    quant: str | None = QuantOpt,
    knowledge: Path | None = typer.Option(None, "--knowledge",
                                          help="Knowledge base (Markdown/text file, folder, or JSONL of passages); "
                                               "default: the run's own. Adds the +knowledge contenders and fact "
                                               "metrics."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, max=20,
                                     help="Passages retrieved per prompt (default: the run's setting, 3)."),
    knowledge_system_prompt: Path | None = typer.Option(None, "--knowledge-system-prompt",
                                                        help="System prompt of prompt-engineering+knowledge (default: "
                                                             "system_prompt_knowledge.txt next to --data, else the "
                                                             "normal one)."),
    prompt_cache: bool = typer.Option(False, "--prompt-cache",
                                      help="llama.cpp reads a contender's shared prompt start (system prompt and "
                                           "examples) once, as chat and serve do: prompt engineering answers about "
                                           "3x faster, rounded differently (see benchmarks/README.md)."),
    no_cache: bool = typer.Option(False, "--no-cache",
                                  help="Generate the base model's answers again instead of reusing an earlier eval's "
                                       "(same prompts, settings and weights); the fresh ones replace the cached."),
    only: str | None = typer.Option(None, "--contenders",
                                    help="Only these contenders, comma-separated (e.g. "
                                         "fine-tuned,fine-tuned+knowledge); the comparison needs prompt-engineering "
                                         "and fine-tuned."),
    canary: bool = typer.Option(True, "--canary/--no-canary",
                                help="General ability on the shipped canary set: held-out loss and answer "
                                     "sanity, base vs specialist, with flips."),
    canary_max_new_tokens: int = typer.Option(128, "--canary-max-new-tokens", min=1,
                                              help="Room for each canary answer; one that has not ended by then "
                                                   "counts as not ending by itself."),
    grounded_numbers: bool | None = typer.Option(
        None, "--grounded-numbers/--free-numbers",
        help="+knowledge answers state only numbers their prompt holds (enforced while decoding) or any "
             "(default: the run's setting, on unless trained with knowledge_grounded_numbers=false)."),
    canary_limit: int | None = typer.Option(None, "--canary-limit", min=1,
                                            help="At most N canary questions and N paragraphs, spread over both "
                                                 "languages (default: all 40 and 32); for quick evals."),
    context_contrast: float | None = typer.Option(
        None, "--context-contrast", min=0.0,
        help="+knowledge answers: context-aware decoding, how much more an answer follows its passages than "
             "the model without them (0: off; default: the run's setting)."),
) -> None:
    """Fine-tuned vs prompt-engineered vs zero-shot base, measured on held-out data (with a
    knowledge base also fine-tuned+knowledge and prompt-engineering+knowledge, and facts)."""
    _quiet_libraries()
    from specialist.evaluate.html import write_reports
    from specialist.evaluate.report import rich_table
    from specialist.evaluate.runner import EvalSettings, run_eval
    from specialist.run_folder import RunFolder

    if (price_per_mtok is None) != (train_price_per_hour is None):
        raise SpecialistError("give both --price-per-mtok and --train-price-per-hour (or neither)")
    settings = EvalSettings(
        model=str(model), data=data, system_prompt=system_prompt, few_shot=few_shot, rules=rules,
        train_data=train_data, limit=limit, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
        style_negatives=style_negatives, endpoint=endpoint, endpoint_model=endpoint_model,
        endpoint_name=endpoint_name, endpoint_api_key=endpoint_api_key,
        price_per_million_prompt_tokens=price_per_mtok, train_price_per_hour=train_price_per_hour, dtype=dtype,
        engine=engine, quant=quant, knowledge=knowledge, cache=not no_cache, prompt_cache=prompt_cache,
        contenders=tuple(n.strip() for n in only.split(",") if n.strip()) if only else None, top_k=top_k,
        knowledge_system_prompt=knowledge_system_prompt, canary=canary,
        canary_max_new_tokens=canary_max_new_tokens, canary_limit=canary_limit, grounded_numbers=grounded_numbers,
        context_contrast=context_contrast)
    doc = run_eval(settings)
    json_out = json_path or RunFolder(model).eval_json
    html_out = html_path or RunFolder(model).eval_html
    write_reports(doc, json_out, html_out)
    console.print(rich_table(doc))
    if doc.get("general_ability"):
        from specialist.evaluate.canary import console_table

        console.print(console_table(doc["general_ability"]))
    console.print(doc["verdict"], markup=False, highlight=False)
    err_console.print(f"wrote {json_out} and {html_out}")


# ---------------------------------------------------------------- serve/export
def _generate_file(model: str, load, input_file: Path, output_file: Path, settings, batch_size: int,
                   system: str | None, as_json: bool, knowledge=None) -> None:
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from specialist.serve.batch import answer_file, read_answered, read_prompts

    records = read_prompts(input_file, system)  # bad input fails before the model loads
    todo = len(records) - len(read_answered(output_file, records, with_knowledge=knowledge is not None))
    gen = load()
    columns = [TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=as_json) as progress:
        task = progress.add_task("answer", total=todo, speed="")
        tokens = [0]
        started = time.perf_counter()

        def advance(n: int, new_tokens: int) -> None:
            tokens[0] += new_tokens
            elapsed = time.perf_counter() - started
            progress.update(task, advance=n, speed=f"{tokens[0] / max(elapsed, 1e-9):.1f} tok/s")

        summary = answer_file(gen, input_file, output_file, settings, batch_size, system, advance, knowledge)
    doc = {"model": model, "input": str(input_file), "output": str(output_file), **summary.as_dict()}
    if as_json:
        _print_json(doc)
    else:
        err_console.print(f"{summary.answered} answered, {summary.skipped} already in {output_file} "
                          f"({doc['tokens_per_second']} tokens/s)")


@app.command()
def serve(
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                           help="Model reference (run folder, HF folder, .gguf, HF id or known name; "
                                                "default gemma-3-270m); repeat to serve several, each named after its "
                                                "folder."),
    models_file: Path | None = typer.Option(None, "--models", exists=True, dir_okay=False,
                                            help="YAML/JSON file of name: model reference, to serve several by name."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", envvar="SPECIALIST_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' (or set SPECIALIST_API_KEY)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Most tokens one request may generate."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1024),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Concurrent requests decoded as one batch."),
    engine: str = EngineOpt,
    threads: int | None = ThreadsOpt,
    quant: str | None = QuantOpt,
    knowledge: Path | None = KnowledgeOpt,
    top_k: int | None = TopKOpt,
) -> None:
    """OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health).

    With a knowledge base, /v1/chat/completions retrieves for the last user message and answers
    list the passages in "context"; send "knowledge": false to skip it. /v1/completions (raw
    text) never retrieves.

    Several models (--model repeated, or --models FILE) answer by the name in the request's
    "model" field; runs of one base share its weights in memory and their requests are batched
    together. Each uses its own run's knowledge base and system prompt."""
    _quiet_libraries()
    from specialist.serve.server import ServerLimits
    from specialist.serve.server import serve as run_server
    from specialist.serve.specialists import load_specialists, model_entries

    entries = model_entries(list(model or ([] if models_file else [DEFAULT_MODEL])), models_file)
    if len(entries) > 1 and (knowledge is not None or top_k is not None):
        raise SpecialistError("--knowledge/--top-k: with several models each uses its own run's knowledge base "
                              "and settings", exit_code=2)
    limits = ServerLimits(max_tokens=max_tokens, max_body_bytes=max_body_bytes, max_batch=max_batch,
                          default_max_tokens=min(256, max_tokens))
    specialists = load_specialists(entries, engine, threads, quant, max_batch,
                                   knowledge_of=lambda ref: _open_knowledge(ref, knowledge, top_k))
    run_server(specialists, host, port, api_key or None, limits)


@app.command()
def export(
    model: str = typer.Option(..., "--model", "-m", help="A run folder (its LoRA is merged) or any model reference."),
    fmt: str = typer.Option(..., "--format", "-f",
                            help="merged (Hugging Face folder), gguf (llama.cpp) or ollama (GGUF + Modelfile)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create."),
    outtype: str | None = typer.Option(None, "--outtype",
                                       help="GGUF weights: f16 (default), bf16, q8_0 or q4_0 (smallest and fastest; "
                                            "can break small models' answers). Merged weights: auto (default: float32 "
                                            "when a LoRA is merged into a half-precision base, else the base's dtype), "
                                            "f32, bf16 or f16."),
    system: Path | None = typer.Option(None, "--system-prompt", help="File with a system prompt for the Modelfile."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    check_data: Path | None = typer.Option(None, "--check-data", exists=True, dir_okay=False,
                                           help="Prompts the artefact answers for the parity check "
                                                "(default: the run's eval data)."),
    check_limit: int = typer.Option(16, "--check-limit", min=1,
                                    help="Prompts the parity check answers (each twice: run and artefact)."),
    check_max_new_tokens: int | None = typer.Option(None, "--check-max-new-tokens", min=1,
                                                    help="Default: 1.5× the longest reference, as eval."),
    no_check: bool = typer.Option(False, "--no-check",
                                  help="Write the artefact without running it against the run (no parity.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Deployable artefacts: merged weights, a GGUF file, or an Ollama model folder, then run
    against the run on its eval prompts (OUT/parity.json); exit 1 when the artefact behaves differently."""
    _quiet_libraries()
    from specialist.export.build import FORMATS
    from specialist.export.build import export as run_export
    from specialist.export.parity import CheckSettings

    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    if system is not None and fmt != "ollama":
        raise typer.BadParameter("only --format ollama carries a system prompt", param_hint="--system-prompt")
    check = None if no_check else CheckSettings(check_data, check_limit, check_max_new_tokens)
    result = run_export(model, fmt, out, outtype, read_text(system).strip() if system else None, overwrite, check=check)
    if as_json:
        _print_json(result.as_dict())
    else:
        console.print(f"[green]exported[/green] {fmt} → {result.out}: {', '.join(result.files)}")
        if result.knowledge:
            console.print(f"  with its knowledge base ({result.knowledge['passages']} passages in knowledge/); "
                          f"clients put the retrieved context in the user message: see {result.out / 'README.md'}",
                          markup=False, highlight=False)
        if fmt == "ollama":
            console.print(f"  ollama create {result.out.name} -f {result.out / 'Modelfile'}", markup=False,
                          highlight=False)
    if result.parity is not None:
        out = err_console if as_json else console
        out.print(f"parity: {result.parity.verdict} (see {result.out / 'parity.json'})",
                  markup=False, highlight=False, soft_wrap=True)
        if result.parity.failed:
            raise typer.Exit(1)


@app.command()
def studio(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(7860, "--port", min=1, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", envvar="SPECIALIST_API_KEY",
                                          help="Require this key on every page and request (or set "
                                               "SPECIALIST_API_KEY)."),
    runs: Path = typer.Option(Path("runs"), "--runs",
                              help="Folder of run folders (uploads go to RUNS/data, exports to RUNS/exports)."),
) -> None:
    """The whole road in a local web app: data, train, proof, chat, export."""
    _quiet_libraries()
    from specialist.studio.app import serve as run_studio
    from specialist.studio.state import StudioSettings

    run_studio(host, port, StudioSettings(runs=runs, api_key=api_key or None))


# ---------------------------------------------------------------- bench and demo
@app.command()
def bench(
    names: list[str] | None = typer.Argument(None, help="Benchmarks to run (default: all; see --list)."),
    quick: bool = typer.Option(False, "--quick", help="A few steps each: checks the benchmarks run, not the figures."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    list_only: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
) -> None:
    """The speed benchmarks in benchmarks/ (training vs the TRL recipe first)."""
    _quiet_libraries()
    from specialist.bench import discover, machine_info, machine_line, rich_tables, run_benchmarks

    if list_only:
        found = discover()
        if as_json:
            _print_json({"benchmarks": [{"name": b.name, "description": b.description, "path": str(b.path)}
                                        for b in found.values()]})
        else:
            for b in found.values():
                console.print(f"[bold]{b.name}[/bold]  {b.description}", highlight=False)
        return
    machine = machine_info()
    if not as_json:
        console.print(machine_line(machine), highlight=False, markup=False, soft_wrap=True)
    results = run_benchmarks(names or None, quick=quick)
    if as_json:
        _print_json({"machine": machine, "benchmarks": results})
    else:
        for table in rich_tables(results):
            console.print(table)


@app.command()
def demo(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model reference."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/demo-<time>)."),
    epochs: float = typer.Option(1.0, "--epochs", min=0.01),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after N optimizer steps (-1: the epochs)."),
    eval_limit: int | None = typer.Option(None, "--eval-limit", min=1,
                                          help="Held-out style prompts in the measured comparison (default 8 with the "
                                               "knowledge base, 16 without)."),
    fact_limit: int = typer.Option(12, "--fact-limit", min=0,
                                   help="Fact questions (facts.jsonl) in the measured comparison, with the knowledge "
                                        "base."),
    knowledge: Path | None = typer.Option(None, "--knowledge",
                                          help="Knowledge base (default: examples/coffee/knowledge)."),
    no_knowledge: bool = typer.Option(False, "--no-knowledge", help="Run without a knowledge base (style only)."),
) -> None:
    """The whole road on the embedded default and the coffee-shop data: check → train → before/after → proof."""
    _quiet_libraries()
    from specialist.demo import DemoSettings, run_demo

    if no_knowledge and knowledge is not None:
        raise typer.BadParameter("give --knowledge PATH or --no-knowledge, not both", param_hint="--no-knowledge")
    s = DemoSettings(model=model, out=out, epochs=epochs, max_steps=max_steps, fact_limit=fact_limit)
    s.knowledge = None if no_knowledge else (knowledge or s.knowledge)
    s.eval_limit = eval_limit or (8 if s.knowledge else 16)
    run_demo(s)


# ---------------------------------------------------------------- entry point
# Failures to write that the user fixes on their side (space, quota, permissions): one line,
# exit 2 like unreadable input, never a traceback. Outputs are written atomically, so what was
# there before is intact and no temporary file is left behind.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_NOTHING_HALF_WRITTEN = ("interrupted: no output was half-written (each file is replaced only once "
                         "complete); run the command again")


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        app()
    except SystemExit as exc:
        cause = interrupt_behind(exc)
        if cause is None:
            raise
        err_console.print(_NOTHING_HALF_WRITTEN, style="yellow", markup=False, highlight=False, soft_wrap=True)
        sys.exit(interrupt_exit_code(cause))
    except Interrupted as exc:
        err_console.print(str(exc), style="yellow", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except SpecialistError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        err_console.print(_NOTHING_HALF_WRITTEN, style="yellow", markup=False, highlight=False, soft_wrap=True)
        sys.exit(interrupt_exit_code(exc))
    except Exception as exc:
        cause = interrupt_behind(exc)
        if cause is not None:  # the signal landed inside a library, which reported it as its own error
            err_console.print(_NOTHING_HALF_WRITTEN, style="yellow", markup=False, highlight=False, soft_wrap=True)
            sys.exit(interrupt_exit_code(cause))
        if not isinstance(exc, OSError) or exc.errno not in _WRITE_ERRNOS:
            raise
        from rich.markup import escape

        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or str(exc)
        err_console.print(f"[red]error:[/red] {escape(where + what[:1].lower() + what[1:])}",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
