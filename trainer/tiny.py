"""A tiny Qwen2-style model and a byte-level BPE tokenizer, built locally from a config.

Tests and `bench/trainer.py` need a real causal LM that loads like any local model path without
downloading anything: two layers, a hidden size of 64, random weights, and a tokenizer trained on
the reference kit's data (so Chinese text takes a sensible number of tokens) with a ChatML chat
template like Qwen's. It knows nothing, which makes "the tuned model learned the answers" visible.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def corpus_lines(paths: Iterable[Path], limit_chars: int = 2_000_000) -> Iterator[str]:
    """Every string value of the JSON lines in `paths` (questions, answers, message contents)."""
    seen = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            for text in _strings(record):
                seen += len(text)
                yield text
                if seen >= limit_chars:
                    return


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def build_tokenizer(out_dir: Path, corpus: Iterable[str], vocab_size: int = 3000):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_tiny_model(
    out_dir: Path,
    data_files: Iterable[Path],
    *,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 3000,
    seed: int = 0,
    init_std: float = 0.1,
) -> Path:
    """Write a tokenizer and a randomly initialised Qwen2 causal LM to `out_dir`; returns it."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir, corpus_lines(list(data_files)), vocab_size)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # Larger than the usual 0.02: the embedding (tied to the output layer) and the final norm
        # are not LoRA targets, and with tiny embeddings every logit stays near zero whatever an
        # adapter does, so the loss could not fall far below uniform.
        initializer_range=init_std,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    return out_dir


def pretrain(
    model_dir: Path,
    conversations: list[list[dict[str, str]]],
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 3e-3,
    max_tokens: int = 128,
) -> float:
    """Full-parameter training on every token of some conversations, so the tiny base is a (weak)
    language model of the domain rather than noise, as a real base model would be; returns the
    last batch's loss. The data should not include what a test later tunes on."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import render

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    texts = [render(tokenizer, c, generation_prompt=False) for c in conversations]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(0)
    model.train()
    loss = torch.tensor(0.0)
    for step in range(steps):
        batch = rng.sample(encoded, batch_size)
        width = max(map(len, batch))
        ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - step / steps)
        optimizer.step()
    model.save_pretrained(model_dir)
    return float(loss.detach())


def general_conversations(data_dir: Path) -> list[list[dict[str, str]]]:
    """The kit's instruction and chat samples (not the huatuo sample the first story tunes on)."""
    out: list[list[dict[str, str]]] = []
    for item in json.loads((data_dir / "alpaca_zh400_en100.json").read_text(encoding="utf-8")):
        question = (item["instruction"] + "\n" + item.get("input", "")).strip()
        out.append([{"role": "user", "content": question}, {"role": "assistant", "content": item["output"]}])
    for line in (data_dir / "openai_chat_medicalgpt500.jsonl").read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        out.append([{"role": m["role"], "content": m["content"]} for m in messages if m.get("content")])
    return out
