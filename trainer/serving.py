"""Chat completions from a local base model and its LoRA adapters.

Each base is loaded once; its adapters are added to the same PEFT model by name and picked per
request (`set_adapter`, or `disable_adapter` for the base itself), so several tuned models share
one copy of the base weights. One generation runs at a time per base (a lock): adapters are a
per-model switch, and one device decodes one sequence fastest anyway. Decoding is a plain loop
over the KV cache in a thread of its own that hands text pieces to the response as tokens come,
so a stream is a real token stream and a client that hangs up stops the loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.completion import ChatRequest
from trainer.data import plain_messages, prompt_ids
from trainer.device import pick_device
from trainer.training import load_base

DEFAULT_MAX_TOKENS = 512
_END = object()


@dataclass
class Decoding:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]


def decoding_of(chat: ChatRequest, context_limit: int, prompt_len: int) -> Decoding:
    # OpenAI's defaults: temperature 1 and top_p 1 unless the request says otherwise.
    room = max(1, context_limit - prompt_len)
    return Decoding(
        max_tokens=min(chat.max_tokens or DEFAULT_MAX_TOKENS, room),
        temperature=1.0 if chat.temperature is None else float(chat.temperature),
        top_p=1.0 if chat.top_p is None else float(chat.top_p),
        seed=chat.seed,
        stop=chat.stop,
    )


class LoadedBase:
    def __init__(self, path: str) -> None:
        self.device = pick_device()
        self.tokenizer, self.model = load_base(path, self.device)
        self.model.eval()
        self.adapters: set[str] = set()
        self.lock = threading.Lock()
        config = self.model.config
        self.context_limit = int(getattr(config, "max_position_embeddings", 4096) or 4096)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = {*eos_ids, self.tokenizer.eos_token_id} - {None}

    def add_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        with self.lock:
            if name in self.adapters:
                return
            if not self.adapters:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            else:
                self.model.load_adapter(str(path), adapter_name=name)
            self.model.eval()
            self.adapters.add(name)

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            if name in self.adapters and len(self.adapters) > 1:
                self.model.delete_adapter(name)
                self.adapters.discard(name)

    def prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        return prompt_ids(self.tokenizer, plain_messages(messages))


@dataclass
class Generation:
    """A `Completion` (sandbox/completion.py) whose pieces are decoded as they are read.

    The prompt is tokenized on the decoding thread, under the base's lock: a fast tokenizer must
    not be used by two threads at once ("Already borrowed")."""

    base: LoadedBase
    adapter: str | None
    model: str
    messages: list[dict[str, Any]]
    chat: ChatRequest | None = None
    decoding: Decoding | None = None  # from `chat` when not given
    prompt_tokens: int = 0
    _prompt: list[int] | None = None
    _generated: int = 0
    _reasons: dict[int, str] = field(default_factory=dict)

    def _prepare(self) -> tuple[list[int], Decoding]:
        if self._prompt is None:
            self._prompt = self.base.prompt(self.messages)
            self.prompt_tokens = len(self._prompt)
        if self.decoding is None:
            assert self.chat is not None
            self.decoding = decoding_of(self.chat, self.base.context_limit, len(self._prompt))
        return self._prompt, self.decoding

    @property
    def completion_tokens(self) -> int:
        return self._generated

    def finish_reason(self, index: int) -> str:
        return self._reasons.get(index, "stop")

    def pieces(self, index: int) -> Iterator[str]:
        out: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        first = self.decoding.seed if self.decoding is not None else self.chat.seed if self.chat else None
        seed = None if first is None else first + index  # n choices: different, reproducible samples
        worker = threading.Thread(target=self._decode, args=(index, seed, out, stop), daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def _decode(self, index: int, seed: int | None, out: queue.Queue[Any], stop: threading.Event) -> None:
        try:
            with self.base.lock:
                self._reasons[index] = self._loop(seed, out, stop)
        except BaseException as exc:  # handed to the reader, which raises it in the request
            out.put(exc)
        finally:
            out.put(_END)

    def _loop(self, seed: int | None, out: queue.Queue[Any], stop: threading.Event) -> str:
        import contextlib

        import torch

        base = self.base
        prompt, d = self._prepare()
        model = base.model
        if self.adapter is not None:
            model.set_adapter(self.adapter)
            context: Any = contextlib.nullcontext()
        else:
            context = model.disable_adapter() if base.adapters else contextlib.nullcontext()
        generator = torch.Generator(device=base.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        tokens: list[int] = []
        sent = ""
        ids = torch.tensor([prompt], device=base.device)
        past = None
        with context, torch.no_grad():
            for _ in range(d.max_tokens):
                if stop.is_set():
                    return "stop"
                result = model(input_ids=ids, past_key_values=past, use_cache=True)
                past = result.past_key_values
                token = _pick(result.logits[0, -1].float(), d, generator)
                if token in base.eos_ids:
                    return "stop"
                tokens.append(token)
                self._generated += 1
                ids = torch.tensor([[token]], device=base.device)
                text = base.tokenizer.decode(tokens, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # a character split across tokens: wait for the rest of its bytes
                cut = _stop_at(text, d.stop)
                if cut is not None:
                    if cut > len(sent):
                        out.put(text[len(sent) : cut])
                    return "stop"
                if len(text) > len(sent):
                    out.put(text[len(sent) :])
                    sent = text
        tail = base.tokenizer.decode(tokens, skip_special_tokens=True)
        if len(tail) > len(sent):
            out.put(tail[len(sent) :])
        return "length"


def _pick(logits: Any, d: Decoding, generator: Any) -> int:
    import torch

    if d.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / d.temperature, dim=-1)
    if d.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < d.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _stop_at(text: str, stops: list[str]) -> int | None:
    found = [text.find(s) for s in stops if s in text]
    return min(found) if found else None
