"""Training stage: supervised fine-tuning (LoRA, DoRA, QLoRA, full) on transformers' Trainer.

    from specialist.config import load_train_config
    from specialist.train import train
    run_dir = train(load_train_config(overrides={"data": "train.jsonl", "max_steps": 50}))
"""

from specialist.train.run import train

__all__ = ["train"]
