"""Tunes: one fine-tuning job at a provider, followed to its end."""
