"""Supervised fine-tuning with a LoRA adapter (PEFT): one job's training loop.

Written as a plain loop rather than TRL's SFTTrainer so that every step can report OpenAI-shaped
metrics, stop on cancel before the next step, and save a checkpoint at each epoch's end, with
nothing between the job and torch. Loss is the mean cross-entropy over trained (assistant) tokens
of a batch; `train_mean_token_accuracy` is the share of those tokens the model predicted exactly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.data import IGNORE, Encoded, encode_example
from trainer.device import pick_device

# "auto" hyperparameters and the LoRA shape (README, "Self-hosted trainer").
BASE_LEARNING_RATE = 2e-4  # × learning_rate_multiplier
LORA_RANK = 16
LORA_ALPHA = 32
WARMUP_FRACTION = 0.03


class Cancelled(Exception):
    """The job was cancelled; training stopped before the next step."""


@dataclass
class TrainSpec:
    base_path: str
    examples: list[list[dict[str, Any]]]
    validation: list[list[dict[str, Any]]]
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    seed: int
    out_dir: Path
    max_tokens: int = 1024
    base_learning_rate: float = BASE_LEARNING_RATE
    lora_rank: int = LORA_RANK
    lora_alpha: int = LORA_ALPHA


@dataclass
class Hooks:
    on_step: Callable[[dict[str, Any]], None] = lambda metrics: None
    on_checkpoint: Callable[[int, Path, dict[str, Any]], None] = lambda step, path, metrics: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    trained_tokens: int  # every token the model read (prompt and answer), all epochs
    seconds: float  # the whole call: loading the base, tokenizing, the loop, saving adapters
    loop_seconds: float = 0.0  # the training steps alone
    rows: list[dict[str, Any]] = field(default_factory=list)


def steps_for(n_examples: int, batch_size: int, n_epochs: int) -> int:
    return max(1, math.ceil(n_examples / batch_size)) * n_epochs


def load_base(path: str, device: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return tokenizer, model


def batch_tensors(batch: list[Encoded], pad_id: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def loss_and_accuracy(model: Any, batch: list[Encoded], pad_id: int, device: Any) -> tuple[Any, float, int]:
    """Mean loss over trained tokens (a tensor, for backward), token accuracy, trained tokens."""
    import torch.nn.functional as F

    ids, labels, mask = batch_tensors(batch, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE)
    trained = target != IGNORE
    count = int(trained.sum())
    correct = int(((logits.argmax(-1) == target) & trained).sum())
    return loss, correct / max(1, count), count


def mean_loss(
    model: Any, examples: list[Encoded], pad_id: int, device: Any, batch_size: int = 8
) -> tuple[float, float]:
    """Token-weighted loss and accuracy over `examples`, without gradients."""
    import torch

    total = correct = tokens = 0.0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = [e for e in examples[start : start + batch_size] if e.trained_tokens]
            if not batch:
                continue
            loss, accuracy, count = loss_and_accuracy(model, batch, pad_id, device)
            total += float(loss) * count
            correct += accuracy * count
            tokens += count
    return total / max(1.0, tokens), correct / max(1.0, tokens)


def held_out_loss(
    base_path: str,
    adapter_dir: Path | None,
    conversations: list[list[dict[str, Any]]],
    max_tokens: int = 1024,
) -> float:
    """The loss of the base model (no adapter) or of base + adapter on some conversations."""
    from peft import PeftModel

    device = pick_device()
    tokenizer, model = load_base(base_path, device)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    encoded = [encode_example(tokenizer, c, max_tokens) for c in conversations]
    return mean_loss(model, encoded, tokenizer.pad_token_id, device)[0]


def train(spec: TrainSpec, hooks: Hooks) -> TrainResult:
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    device = pick_device()
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    tokenizer, base = load_base(spec.base_path, device)
    pad_id = tokenizer.pad_token_id
    encoded = [encode_example(tokenizer, m, spec.max_tokens) for m in spec.examples]
    encoded = [e for e in encoded if e.trained_tokens]
    valid = [
        e
        for e in (encode_example(tokenizer, m, spec.max_tokens) for m in spec.validation)
        if e.trained_tokens
    ]
    lora = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    learning_rate = spec.base_learning_rate * spec.learning_rate_multiplier
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    per_epoch = max(1, math.ceil(len(encoded) / spec.batch_size))
    total = per_epoch * spec.n_epochs
    warmup = max(1, int(total * WARMUP_FRACTION))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    step = 0
    trained_tokens = 0
    rows: list[dict[str, Any]] = []
    last_dir = spec.out_dir
    loop_started = time.perf_counter()
    for _ in range(spec.n_epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for start in range(0, len(order), spec.batch_size):
            if hooks.should_stop():
                raise Cancelled()
            batch = [encoded[i] for i in order[start : start + spec.batch_size]]
            loss, accuracy, _ = loss_and_accuracy(model, batch, pad_id, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            trained_tokens += sum(len(e.input_ids) for e in batch)
            metrics: dict[str, Any] = {
                "step": step,
                "total_steps": total,
                "train_loss": round(float(loss.detach()), 6),
                "train_mean_token_accuracy": round(accuracy, 6),
            }
            if valid:
                model.eval()
                pick = rng.sample(valid, min(spec.batch_size, len(valid)))
                metrics["valid_loss"], metrics["valid_mean_token_accuracy"] = (
                    round(v, 6) for v in mean_loss(model, pick, pad_id, device)
                )
                if step == total:
                    # As at OpenAI, the whole validation set is scored only at the end.
                    metrics["full_valid_loss"], metrics["full_valid_mean_token_accuracy"] = (
                        round(v, 6) for v in mean_loss(model, valid, pad_id, device)
                    )
                model.train()
            rows.append(metrics)
            hooks.on_step(metrics)
        last_dir = spec.out_dir / f"step-{step}"
        model.save_pretrained(str(last_dir))
        hooks.on_checkpoint(step, last_dir, rows[-1])
    done = time.perf_counter()
    return TrainResult(last_dir, step, trained_tokens, done - started, done - loop_started, rows)
