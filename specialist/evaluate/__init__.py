"""Stage 4: proof: fine-tuning versus prompt engineering, measured.

    examples.py     eval examples (the data stage's loader) and their facts/answerable checks
    contenders.py   zero-shot, prompt-engineering, fine-tuned, an OpenAI-compatible endpoint
    metrics.py      chrF, ROUGE-L; exact match, accuracy, macro-F1 for label tasks
    style.py        style adherence classifier (char n-gram TF-IDF + logistic regression), spread
    rules.py        declared style rules (eval.yaml) and their pass rates
    loss.py         held-out loss / perplexity of the references under each contender's prompt
    cost.py         tokens, latency, throughput; break-even of training against prompt length
    runner.py       `specialist eval`: runs all of the above
    report.py       report.json, the terminal table, the comparison table and the verdict
    html.py         report.html with inline charts
"""
