"""Tuneforge's self-hosted trainer: real LoRA fine-tuning (PEFT) behind the sandbox's
OpenAI-compatible HTTP layer. Needs the `trainer` extra (torch, transformers, peft)."""
