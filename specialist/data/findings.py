"""The one table of data findings: stable codes, severity, title and suggested fix.

Errors (E0xx) make `specialist data check` exit 1 and stop training; warnings (W1xx) point
at records that would teach the model something you probably do not want. docs/data-checks.md
is rendered from this table (`python -m specialist.data.findings > docs/data-checks.md`), and a
test keeps the two in sync."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Code:
    code: str
    severity: Severity
    kind: str  # short slug, stable like the code
    title: str
    fix: str


_TABLE = [
    # ---- errors: the record cannot be trained on as written
    Code("E001", "error", "invalid-json", "Invalid JSON or malformed row (with line and column)",
         "Fix the syntax at the given line:column (a missing comma or quote is the usual cause)."),
    Code("E002", "error", "truncated-file", "The file ends in the middle of a record",
         "The file was cut off (interrupted download or write): regenerate or re-export it."),
    Code("E003", "error", "not-an-object", "A record that is not a JSON object",
         "Each record must be an object such as {\"prompt\": …, \"completion\": …}."),
    Code("E004", "error", "missing-field", "A required field or column is missing",
         "Add the field; records need prompt+completion, messages, or instruction+output."),
    Code("E005", "error", "empty-field", "A required field is empty",
         "Write the missing text or drop the record; an empty answer teaches the model to say nothing."),
    Code("E006", "error", "whitespace-field", "A field holds only whitespace",
         "Write the text or drop the record."),
    Code("E007", "error", "wrong-type", "A field has the wrong type (not a string, list or object)",
         "Use a string for text fields and a list of {role, content} objects for messages."),
    Code("E008", "error", "unknown-role", "A chat message has a role other than system, user, assistant",
         "Rename the role (e.g. human→user, gpt/bot→assistant) or drop the message."),
    Code("E009", "error", "no-final-answer", "A chat record does not end with an assistant turn",
         "End every conversation with the assistant answer that should be learnt."),
    Code("E010", "error", "empty-file", "The file holds no records",
         "Point at the right file; a dataset needs records."),
    Code("E011", "error", "record-too-large", "A record is larger than the size cap",
         "Split the record or raise --max-record-bytes; such records never fit a training context."),
    Code("E012", "error", "not-utf8", "Text that is not valid UTF-8",
         "Re-save the file as UTF-8 (e.g. `iconv -f cp1250 -t utf-8`)."),
    Code("E013", "error", "misplaced-system", "A system message that is not the first message",
         "Put the system message first (one per conversation)."),
    Code("E014", "error", "no-user-turn", "A chat record without a user turn before the answer",
         "Add the user message the answer replies to."),
    Code("E015", "error", "too-many-errors", "Checking stopped after the error cap",
         "Fix the reported errors first (the file is probably in another format: try --format)."),
    # ---- warnings: trainable, but probably not what you want the model to learn
    Code("W101", "warning", "duplicate", "Exact duplicate records",
         "Keep one copy: duplicates weigh those answers several times and leak into evaluation."),
    Code("W102", "warning", "near-duplicate", "Near-duplicate records (same question and answer, small edits)",
         "Keep the best variant or make them genuinely different examples."),
    Code("W103", "warning", "contradiction", "The same or a near-same prompt with different answers",
         "Decide on one answer; contradictory targets teach the model to guess."),
    Code("W104", "warning", "truncated-completion", "The answer is cut at --max-length tokens",
         "Shorten the record or raise --max-length; the cut answer never teaches the model to stop."),
    Code("W105", "warning", "prompt-cut", "The prompt takes over half of --max-length tokens and loses its start",
         "Shorten the prompt (or system prompt, earlier turns) or raise --max-length; "
         "the model never sees what was cut."),
    Code("W106", "warning", "length-outlier", "An answer far longer or shorter than the rest",
         "Check the record: outliers are often pasted or cut text; the model copies the length it sees."),
    Code("W107", "warning", "language-mismatch", "Answers in another language than the dataset's",
         "Translate the record or drop it, unless the specialist should answer in several languages."),
    Code("W108", "warning", "form-of-address", "A form of address (formal/informal) that breaks the dataset's style",
         "Rewrite the answer in the form the rest uses (e.g. Polish Ty vs Pan/Pani, German du vs Sie)."),
    Code("W109", "warning", "style-break",
         "Openings, endings, punctuation, emoji or layout that break the dataset's style",
         "Edit the records to the style the rest of the dataset has: "
         "the model learns the style from every example."),
    Code("W110", "warning", "eval-leakage", "Evaluation records that (nearly) duplicate training records",
         "Remove them from the evaluation set (or use `specialist data split`), "
         "else the evaluation overstates quality."),
    Code("W111", "warning", "personal-data", "Possible personal data (e-mail, phone, card number, IBAN, PESEL)",
         "Remove or anonymise it: a fine-tuned model can repeat training data verbatim."),
    Code("W112", "warning", "knowledge-injection", "Many unique facts and numbers with little shared style",
         "Fine-tuning teaches style and format, not reliable facts: serve facts through retrieval (RAG)."),
    Code("W113", "warning", "refusal-share", "A large share of refusals or fallback answers",
         "Match the share to what production needs, or the model will refuse too often."),
    Code("W114", "warning", "label-imbalance", "Labels or topics with very unequal shares",
         "Add examples for rare labels (or down-sample common ones) so the model does not default to the majority."),
    Code("W115", "warning", "too-few-examples", "Too few examples to fine-tune well",
         "Collect more: hundreds of examples at least, better thousands."),
    # ---- against a knowledge base: `data check --knowledge K` (W116, W117, W122), `knowledge check K` (W118–W121)
    Code("W116", "warning", "knowledge-contradiction",
         "An answer states a number (price, duration, percent, weight…) that a retrieved passage contradicts",
         "Correct the answer to what the knowledge base says (or the passage, if it is out of date): "
         "the model learns whichever figure it sees, and retrieval will show it the other."),
    Code("W117", "warning", "unsupported-fact", "An answer states a number or name found nowhere in the knowledge base",
         "Add the fact to the knowledge base, or drop it from the answer: a trained figure with no passage behind "
         "it is one the specialist will invent."),
    Code("W118", "warning", "duplicate-passage", "Identical or near-identical passages in the knowledge base",
         "Keep one: copies crowd other passages out of the retrieved top k, and drift apart when one is edited."),
    Code("W119", "warning", "passage-conflict", "Passages about the same subject that state different numbers",
         "Decide on one figure and fix the other passage; the specialist answers with whichever it retrieves."),
    Code("W120", "warning", "passage-too-long", "A passage longer than 150 words",
         "Split it at a heading or paragraph: long passages blur retrieval and take up the prompt."),
    Code("W121", "warning", "passage-too-short", "A passage shorter than 5 words",
         "Merge it into its neighbour or add the subject it is about: on its own it answers nothing."),
    Code("W122", "warning", "unpractised-knowledge",
         "Figures of the knowledge base (prices, times, doses…) that fewer than 3 training answers state",
         "Add examples whose answers state them, asked in different ways: a specialist reads a figure from its "
         "context far more reliably when its training answers practised that one (benchmarks/README.md)."),
]

CODES: dict[str, Code] = {c.code: c for c in _TABLE}


@dataclass
class DataError:
    """A located error: file:line:field and a one-line reason."""

    code: str
    file: str
    line: int
    field: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f":{self.field}" if self.field else "")
        return f"{where}: {self.code} {self.message}"


@dataclass
class DataWarning:
    """A quality finding that names the records involved (line numbers in `file`)."""

    code: str
    lines: list[int]
    message: str
    file: str = ""
    suggestion: str = ""
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.suggestion:
            self.suggestion = CODES[self.code].fix

    @property
    def kind(self) -> str:
        return CODES[self.code].kind

    def to_dict(self) -> dict:
        doc = {"code": self.code, "kind": self.kind, "lines": self.lines, "message": self.message,
               "suggestion": self.suggestion, "file": self.file}
        if self.details:
            doc["details"] = self.details
        return doc


def render_markdown() -> str:
    """docs/data-checks.md: the code table users look codes up in."""
    out = [
        "# Data checks",
        "",
        "`specialist data check` reports every finding with a stable code. Errors (E0xx) make the",
        "command exit 1 and stop `specialist train`; warnings (W1xx) name the records involved and",
        "leave the exit code at 0. `--json` prints them under `errors` and `warnings`.",
        "",
        "A knowledge base gets the same treatment: `specialist knowledge check K` reports bad knowledge",
        "files with the error codes below (located file:line, exit 1) and W118–W121 on its passages;",
        "`specialist data check DATA --knowledge K` adds W116, W117 and W122, the answers' facts against it.",
        "",
        "This page is generated from `specialist/data/findings.py`",
        "(`python -m specialist.data.findings > docs/data-checks.md`).",
        "",
        "| code | severity | kind | what | suggested fix |",
        "|---|---|---|---|---|",
    ]
    for c in _TABLE:
        fix = c.fix.replace("|", "\\|")
        out.append(f"| {c.code} | {c.severity} | `{c.kind}` | {c.title} | {fix} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
