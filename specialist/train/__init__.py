"""Stage 3: fine-tuning: LoRA, DoRA, QLoRA and full, on transformers/TRL/PEFT."""
