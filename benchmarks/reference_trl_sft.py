"""The reference recipe the training benchmark compares against: plain TRL SFTTrainer + PEFT
LoRA as TRL's documentation shows it, with fp32 weights (from_pretrained's default dtype) and
no mixed precision.

    model = AutoModelForCausalLM.from_pretrained(MODEL)               # fp32
    trainer = SFTTrainer(model=model, train_dataset=dataset,           # prompt/completion chats
                         args=SFTConfig(...), peft_config=LoraConfig(r=16, target_modules="all-linear"))
    trainer.train()

Same data, base model and hyper-parameters as `specialist train` in bench_train_speed.py:
1 epoch, batch 8, max length 256, lr 2e-4, linear schedule without warm-up, LoRA r=16
alpha=32 on all linear layers. SFTConfig turns bf16 on by default; it is turned off here
(the fp32 recipe). The tokenizer carries the same chat template specialist trains with.

TRL's prompt/completion path trains every token after the prompt, so with a template that
writes text after the end-of-turn token (specialist's default template ends an assistant turn
with "<eos>\n\n") its loss also covers that text; `trained_tokens` and `loss_covers` report
what the loss was computed on, for comparison with specialist's (completion + end-of-turn).

    python benchmarks/reference_trl_sft.py --data examples/coffee/train.jsonl [--limit 64] [--threads 2] \\
        [--adapter-out DIR]
prints one JSON document: tokens, train_seconds, tokens_per_second, step losses, and saves the
trained LoRA adapter to DIR when given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def loss_covers(tokenizer, labels: list[int]) -> str:
    """What an example's trained tokens are, in words: completion, end-of-turn, and whatever
    follows the end-of-turn token (quoted)."""
    trained = [t for t in labels if t != -100]
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    if eos not in trained:
        return "completion (no end-of-turn token)"
    after = trained[len(trained) - trained[::-1].index(eos):]
    desc = f"completion + {tokenizer.eos_token}"
    return desc + (f" + {tokenizer.decode(after)!r}" if after else "")


def run(data: Path, model_ref: str = "gemma-3-270m", limit: int | None = None, threads: int | None = None,
        seed: int = 42, adapter_out: Path | None = None) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.train.dataset import read_examples

    if threads:
        torch.set_num_threads(threads)
    source = resolve(model_ref)
    tokenizer = load_tokenizer(source)  # the model's chat template (or specialist's default one)
    examples = read_examples(data)[:limit]
    dataset = Dataset.from_list([
        {"prompt": ex.messages, "completion": [{"role": "assistant", "content": ex.completion}]}
        for ex in examples])

    model = AutoModelForCausalLM.from_pretrained(source.weights, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out, num_train_epochs=1, per_device_train_batch_size=8, learning_rate=2e-4,
            max_length=256, lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
            save_strategy="no", report_to="none", bf16=False, use_cpu=True, seed=seed,
            include_num_input_tokens_seen="non_padding", disable_tqdm=True)
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
        labels = trainer.train_dataset["labels"]
        trained_tokens = sum(sum(1 for t in row if t != -100) for row in labels)
        covers = loss_covers(tokenizer, labels[0])
        cpu_start = time.process_time()  # CPU time: comparable even when the machine is shared
        result = trainer.train()
        cpu_seconds = time.process_time() - cpu_start
        if adapter_out is not None:
            trainer.model.save_pretrained(str(adapter_out))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    seconds = float(result.metrics["train_runtime"])
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"recipe": "trl-sft-fp32", "examples": len(examples), "steps": trainer.state.global_step,
            "tokens": tokens, "train_seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1), "cpu_seconds": round(cpu_seconds, 2),
            "tokens_per_cpu_second": round(tokens / cpu_seconds, 1), "train_loss": float(result.training_loss),
            "losses": losses, "threads": torch.get_num_threads(), "trained_tokens": trained_tokens,
            "loss_covers": covers}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--adapter-out", type=Path, default=None, help="save the trained adapter here")
    a = parser.parse_args()
    doc = run(a.data, a.model, a.limit, a.threads, a.seed, a.adapter_out)
    sys.stdout.write(json.dumps(doc) + "\n")
