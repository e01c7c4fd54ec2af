"""Token counting the way OpenAI's fine-tuning cookbook bills chat examples.

tiktoken needs its BPE files; offline they are read from the folder named by `TIKTOKEN_CACHE_DIR`.
The count is the cookbook's estimate ("not exact!"), which is also what the quote is built on:
3 tokens per message, the tokens of every string value (the role included), 1 more per `name`,
and 3 for the reply priming.

DPO examples (`{"input": {"messages"}, "preferred_output", "non_preferred_output"}`) are counted as
one conversation: the input messages followed by both outputs, each message the chat way, with the
reply priming once. OpenAI bills DPO per training token but publishes no counting rule; the prompt
is shared by the pair, so it is counted once, and each output costs what an assistant message costs
in a chat example, which keeps DPO and chat quotes comparable. (If the provider runs the prompt
once per output, the real figure is higher by the input's tokens; the quote is an estimate, like
the cookbook's.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import cache
from typing import Any

import orjson
import tiktoken

from shared.config import get_settings

log = logging.getLogger(__name__)

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# Longest first so `gpt-4o…` is not caught by `gpt-4`.
_ENCODING_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-4", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
)
# Self-hosted / OpenAI-compatible models have no tiktoken encoding of their own; o200k_base is the
# tokenizer of every model OpenAI still fine-tunes, so it is the least surprising estimate.
DEFAULT_ENCODING = "o200k_base"

# Each distinct string is tokenized once while it stays in a bounded cache: role names and a
# shared system prompt repeat on every row, unique answers age out. The cache keeps two generations
# of at most _CACHE_SIZE strings and _CACHE_GENERATION_CHARS characters each (a hit moves a string
# to the young one), so its memory is bounded whatever the data; strings over _CACHE_MAX_CHARS are
# not kept at all.
_CACHE_SIZE = 8192
_CACHE_MAX_CHARS = 4096
_CACHE_GENERATION_CHARS = 1 << 20
# Below this many strings a batch is tokenized in the calling thread: handing work to a thread
# costs more than it saves.
_MIN_PARALLEL_STRINGS = 64
# Sequences of roles whose fixed tokens an ExampleCounter keeps at hand.
_ROLES_KEPT = 256

# Optional faster exact tokenizer (`pip install 'tuneforge[fast]'`). It is used only when it is
# importable, its encoding exists there, and it gives tiktoken's counts on every probe below;
# TUNEFORGE_TOKENIZER=tiktoken turns it off. tiktoken stays the reference.
_PROBES = (
    "",
    " ",
    "hello",
    "Hello, world! How's it going? I'm fine; they're here, we've seen it, you'll see, I'd go.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\nlines\r\nCRLF\n\n\n   \n",
    "1234567890 3.14159 1,000,000 -42 0x1F 2024-07-18T12:00:00Z",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\tif x != None: pass",
    '{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1"}]}',
    "https://example.com/path?query=1&b=%20#frag user@example.org",
    "HelloWORLD camelCaseString snake_case_name SCREAMING_CASE abc123def",
    "你是一名经验丰富的医生，请用简洁的中文回答。头痛怎么办？多休息，多喝水！",
    "治疗阳痿吃什么药呢？，性生活一直很正常的，但是这段时间感觉性欲变低了（２０２４年）",
    "東京は日本の首都です。カタカナとひらがな、漢字。",
    "한국어 문장도 토큰화합니다. 안녕하세요!",
    "Ünïcödé àccénts, naïve café, Straße, ΕΛΛΗΝΙΚΆ, русский текст, עברית, العربية, हिन्दी",
    "e\u0301 a\u0308 combining marks \u200b zero width \u00a0 no-break \u3000 ideographic space",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇨🇳 ❤️ flags and ZWJ sequences",
    "<|endoftext|> <|im_start|>user<|im_end|> <|fim_prefix|> special-token text is ordinary text",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@~~~```|||\\\\///",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ　１２３ and ① ② ③ ﬁ ligature ℃ ㎡",
    "\x00\x01\x7f control characters \ufeff BOM \U0010ffff last code point",
    "混合 mixed 中英文 text with English words 和 numbers 123 在一起。",
)
# tiktoken's counts of the probes (tiktoken==0.14.0; tests/shared/test_fast_tokenizer.py checks them
# against tiktoken itself), so that checking the fast tokenizer does not load tiktoken's encoding
# (80 MiB for o200k_base) into a process that will not otherwise need it. For another encoding,
# tiktoken is asked.
_PROBE_COUNTS: dict[str, tuple[int, ...]] = {
    "o200k_base": (
        0,
        1,
        1,
        25,
        6,
        11,
        36,
        28,
        24,
        18,
        15,
        26,
        30,
        21,
        13,
        34,
        16,
        27,
        32,
        12,
        26,
        37,
        15,
        16,
    ),
    "cl100k_base": (
        0,
        1,
        1,
        30,
        6,
        11,
        36,
        28,
        24,
        18,
        16,
        46,
        51,
        26,
        20,
        61,
        18,
        39,
        31,
        12,
        28,
        50,
        16,
        19,
    ),
}


def base_model_name(model: str) -> str:
    """`ft:gpt-4o-mini-2024-07-18:org:suffix:id` → `gpt-4o-mini-2024-07-18`; other names unchanged."""
    if model.startswith("ft:"):
        return model.split(":", 2)[1]
    return model


def encoding_name_for_model(model: str) -> str:
    base = base_model_name(model.strip()).lower()
    for prefix, name in _ENCODING_BY_PREFIX:
        if base.startswith(prefix):
            return name
    return DEFAULT_ENCODING


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding of `model` (fine-tuned names use their base model's)."""
    return get_encoding(encoding_name_for_model(model))


class _Backend:
    """A way to count the tokens of strings in one encoding.

    - `count_all(texts)`: the counts, one call per text, in the calling thread.
    - `parallel`: `count_all` releases the GIL while it tokenizes each text, so a batch is worth
      splitting over threads that each run their own `count_all` (tiktoken).
    - `count_detached(texts, threads)`: the counts of a whole slice from one call that releases
      the GIL until it is done (tiktoken's joined encode, quicktok's native batch), so slices can
      be counted in background threads while the caller goes on with Python work; None when
      there is none. A thread that needs the GIL back after every short text would wait for the
      busy caller each time (up to the 5 ms switch interval), which is why the one-call form
      matters. `native_threads`: the call itself can use several threads.
    """

    def __init__(
        self,
        name: str,
        count_all: Callable[[list[str]], list[int]],
        *,
        parallel: bool = False,
        count_detached: Callable[[list[str], int], list[int]] | None = None,
        native_threads: bool = False,
    ) -> None:
        self.name = name
        self.count_all = count_all
        self.parallel = parallel
        self.count_detached = count_detached
        self.native_threads = native_threads


@cache
def _tiktoken_backend(encoding_name: str) -> _Backend:
    encoding = get_encoding(encoding_name)
    encode = encoding.encode_ordinary

    def count_all(texts: list[str]) -> list[int]:
        # encode_ordinary: a user's text that happens to contain "<|endoftext|>" is text, not a
        # special token, and must not make tiktoken raise.
        return [len(encode(text)) for text in texts]

    joined = _joined_counter(encoding, count_all)
    return _Backend("tiktoken", count_all, parallel=True, count_detached=joined)


def _joined_counter(
    encoding: tiktoken.Encoding, count_all: Callable[[list[str]], list[int]]
) -> Callable[[list[str], int], list[int]] | None:
    """Counts of a whole batch in one tiktoken call that holds no GIL: the texts joined by the
    end-of-text token, encoded with that one special token allowed. tiktoken runs its split
    pattern on the text between allowed special tokens separately, so each text gets exactly the
    tokens it gets alone; the counts are the runs between the separators. Texts that contain the
    separator's own spelling are counted alone. None (one call per text then) when this tiktoken
    has no buffer call or the trick does not reproduce `count_all` on the probes."""
    separator = "<|endoftext|>"
    core = getattr(encoding, "_core_bpe", None)
    if separator not in encoding.special_tokens_set or not hasattr(core, "encode_to_tiktoken_buffer"):
        return None
    allowed = {separator}
    mark = encoding.encode_single_token(separator).to_bytes(4, "little")

    def count_joined(texts: list[str], threads: int = 1) -> list[int]:
        alone = [i for i, text in enumerate(texts) if separator in text]
        batch = [text for text in texts if separator not in text] if alone else texts
        try:
            data = memoryview(core.encode_to_tiktoken_buffer(separator.join(batch) + separator, allowed))
            tokens = data.tobytes()
        except (UnicodeError, ValueError, TypeError):  # lone surrogates: encode_ordinary copes
            return count_all(texts)
        counts: list[int] = []
        find = tokens.find
        start = 0
        for _ in batch:
            end = find(mark, start)
            while end & 3:  # the mark's bytes straddling two tokens
                end = find(mark, end + 1)
            counts.append((end - start) >> 2)
            start = end + 4
        if alone:
            singles = count_all([texts[i] for i in alone])
            for i, n in zip(alone, singles, strict=True):
                counts.insert(i, n)
        return counts

    try:
        probes = [*_PROBES, "a" + separator + "b", separator]
        if count_joined(probes) != count_all(probes):
            return None
    except Exception:  # noqa: BLE001 - an internal call that changed: one call per text then
        return None
    return count_joined


# What quicktok may raise for a string it cannot take (a lone surrogate: TypeError).
_REFUSED = (TypeError, ValueError, UnicodeError)


def fast_backend(encoding_name: str, tokenizer: Any = None) -> _Backend | None:
    """quicktok's tokenizer for the encoding (or `tokenizer`, an object with quicktok's `count`
    and `encode_batch`) when it is available and both its single and batch calls give tiktoken's
    counts on every probe; None otherwise. Strings it refuses (lone surrogates) are counted by
    tiktoken, loaded then."""
    try:
        if tokenizer is None:
            import quicktok  # type: ignore[import-not-found,unused-ignore]

            tokenizer = quicktok.get_encoding(encoding_name)
        count, encode_batch = tokenizer.count, tokenizer.encode_batch
        probes = list(_PROBES)
        known = _PROBE_COUNTS.get(encoding_name)
        expected = list(known) if known is not None else _tiktoken_backend(encoding_name).count_all(probes)
        offsets = encode_batch(probes, 1, False)[1].tolist()
        batch = [end - start for start, end in zip(offsets, offsets[1:], strict=False)]
        if [count(text) for text in probes] != expected or batch != expected:
            log.warning("quicktok disagrees with tiktoken on %s; counting with tiktoken", encoding_name)
            return None
    except Exception as exc:  # noqa: BLE001 - not installed, no such encoding, a broken build
        if not isinstance(exc, ImportError):
            log.warning("quicktok is unusable for %s (%s); counting with tiktoken", encoding_name, exc)
        return None

    def count_one(text: str) -> int:
        try:
            return count(text)  # type: ignore[no-any-return]
        except _REFUSED:
            return _tiktoken_backend(encoding_name).count_all([text])[0]

    def count_all(texts: list[str]) -> list[int]:
        try:
            return [count(text) for text in texts]
        except _REFUSED:
            return [count_one(text) for text in texts]

    def count_detached(texts: list[str], threads: int) -> list[int]:
        try:
            offsets = encode_batch(texts, threads, False)[1]
        except _REFUSED:
            return [count_one(text) for text in texts]
        return (offsets[1:] - offsets[:-1]).tolist()  # type: ignore[no-any-return]

    return _Backend("quicktok", count_all, count_detached=count_detached, native_threads=True)


TOKENIZERS = ("auto", "tiktoken", "quicktok")


def _choice(tokenizer: str | None) -> str:
    choice = tokenizer or get_settings().tokenizer
    if choice not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {choice!r}")
    return choice


def tokenizer_backend(encoding_name: str, tokenizer: str | None = None) -> _Backend:
    """The backend that counts `encoding_name`: quicktok when usable (see above) unless
    `tokenizer` (default: TUNEFORGE_TOKENIZER) is "tiktoken", else tiktoken."""
    return _backend(encoding_name, _choice(tokenizer))


@cache
def _backend(encoding_name: str, choice: str) -> _Backend:
    if choice != "tiktoken":
        fast = fast_backend(encoding_name)
        if fast is not None:
            return fast
    return _tiktoken_backend(encoding_name)


def default_threads() -> int:
    """TUNEFORGE_TOKENIZER_THREADS, else the CPUs this process may run on."""
    configured = get_settings().tokenizer_threads
    if configured:
        return max(1, configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class TokenLengths:
    """Token lengths of strings in one encoding, through the bounded cache (see above).

    `lengths(text)` counts one string; `count_all(texts, pool)` counts a batch of distinct strings,
    split over the pool's threads when the backend releases the GIL. Only the thread that owns this
    object touches the cache; worker threads only run the tokenizer."""

    def __init__(self, encoding_name: str, backend: _Backend | None = None) -> None:
        self.encoding_name = encoding_name
        self.backend = backend or tokenizer_backend(encoding_name)
        self._young: dict[str, int] = {}
        self._old: dict[str, int] = {}
        self._chars = 0

    def get(self, text: str) -> int | None:
        found = self._young.get(text)
        if found is None:
            found = self._old.get(text)
            if found is not None:
                self.put(text, found)
        return found

    def put(self, text: str, length: int) -> None:
        size = len(text)
        if size > _CACHE_MAX_CHARS:
            return
        young = self._young
        young[text] = length
        self._chars += size
        if len(young) >= _CACHE_SIZE or self._chars >= _CACHE_GENERATION_CHARS:
            self._old, self._young, self._chars = young, {}, 0

    def put_all(self, lengths: dict[str, int]) -> None:
        """`put` for many strings at once (one dict update when none is too long to keep)."""
        if not lengths:
            return
        if max(map(len, lengths)) > _CACHE_MAX_CHARS:
            lengths = {text: n for text, n in lengths.items() if len(text) <= _CACHE_MAX_CHARS}
        young = self._young
        young.update(lengths)
        self._chars += sum(map(len, lengths))
        if len(young) >= _CACHE_SIZE or self._chars >= _CACHE_GENERATION_CHARS:
            self._old, self._young, self._chars = young, {}, 0

    def __call__(self, text: str) -> int:
        found = self.get(text)
        if found is None:
            found = self.backend.count_all([text])[0]
            self.put(text, found)
        return found

    def count_all(self, texts: list[str], pool: Executor | None = None, threads: int = 1) -> list[int]:
        """Token lengths of `texts`, in order (not cached here; see `ExampleCounter`)."""
        backend = self.backend
        if pool is None or threads < 2 or not backend.parallel or len(texts) < _MIN_PARALLEL_STRINGS:
            return backend.count_all(texts)
        # Interleaved slices balance long and short strings; the calling thread takes the first.
        slices = [texts[i::threads] for i in range(threads)]
        futures = [pool.submit(backend.count_all, part) for part in slices[1:]]
        results = [backend.count_all(slices[0])] + [future.result() for future in futures]
        counts = [0] * len(texts)
        for i, part in enumerate(results):
            counts[i::threads] = part
        return counts


def token_lengths(encoding_name: str, tokenizer: str | None = None) -> TokenLengths:
    """The process-wide cached lengths for `encoding_name`, counted by `tokenizer_backend`."""
    return _lengths(encoding_name, _choice(tokenizer))


@cache
def _lengths(encoding_name: str, choice: str) -> TokenLengths:
    return TokenLengths(encoding_name, _backend(encoding_name, choice))


def count_text_tokens(text: str, encoding: tiktoken.Encoding) -> int:
    return token_lengths(encoding.name)(text)


def example_parts(messages: Iterable[Mapping[str, Any]]) -> tuple[int, list[str]]:
    """A chat example as (fixed tokens, strings to tokenize): its count is the fixed part plus the
    token length of every string. The fixed part is 3 per message, 1 per `name` and 3 for the
    reply; the strings are every string value (the role included), the text of content parts, and
    tool_calls / function_call as JSON."""
    fixed = REPLY_PRIMING_TOKENS
    texts: list[str] = []
    for message in messages:
        fixed += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                texts.append(value)
            elif key == "content" and isinstance(value, list):
                # Content parts: only text parts are countable offline; image parts are priced by
                # the provider from the image itself and are left out of this estimate.
                texts.extend(
                    part["text"]
                    for part in value
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
            elif isinstance(value, (list, dict)):
                # tool_calls / function_call reach the model as JSON text, so count them as such.
                texts.append(orjson.dumps(value).decode())
            # weight (0/1), null content and other scalars carry no text to train on.
            if key == "name":
                fixed += TOKENS_PER_NAME
    return fixed, texts


def count_example_tokens(messages: Iterable[Mapping[str, Any]], encoding: tiktoken.Encoding) -> int:
    """Tokens of one chat example as the cookbook counts them (see the module docstring)."""
    fixed, texts = example_parts(messages)
    length = token_lengths(encoding.name)
    return fixed + sum(map(length, texts))


def count_chat_tokens(messages: Iterable[Mapping[str, Any]], encoding: tiktoken.Encoding) -> int:
    """Prompt tokens of a chat request; the same rule as a training example."""
    return count_example_tokens(messages, encoding)


Ticket = tuple[int, list[str]]


class Submitted:
    """A batch of distinct strings handed to the tokenizer (see `ExampleCounter.submit`): their
    counts, or the futures of its interleaved slices."""

    def __init__(
        self,
        texts: list[str],
        counts: list[int] | None = None,
        futures: list[Future[list[int]]] | None = None,
    ) -> None:
        self.texts = texts
        self._counts = counts
        self._futures = futures or []

    def counts(self) -> list[int]:
        if self._counts is None:
            parts = [future.result() for future in self._futures]
            if len(parts) == 1:
                self._counts = parts[0]
            else:
                self._counts = [0] * len(self.texts)
                for i, part in enumerate(parts):
                    self._counts[i :: len(parts)] = part
        return self._counts


class ExampleCounter:
    """Token counts of many training examples, a batch at a time, with the figures of
    `count_training_example` whatever the number of threads.

    1. `add(example)` (or `add_plain`) returns a ticket: the fixed tokens plus the lengths that the
       cache knows, and the strings still to count; those join the batch's distinct strings,
       unless the batch before it is counting them already.
    2. `submit()` closes the batch and starts counting its strings in `threads - 1` background
       threads, with calls that hold no GIL for the whole slice (tiktoken on the texts joined by
       <|endoftext|>, quicktok's native batch), and returns at once: the caller reads and checks
       the next batch meanwhile, which is where the time goes in a one-pass pipeline. A backend
       without such a call is run over `threads` threads (the calling one included), one string
       per call, and the call returns when they are counted; `threads=1` counts in the caller.
    3. `wait(submitted)` takes the counts (into the cache too); then `tokens(ticket)` is the count
       of every example of that batch. Batches must be waited for in the order they were
       submitted, each before the one after the next is submitted.

    `close()` (or `with`) stops the threads."""

    def __init__(
        self,
        encoding_name: str,
        threads: int | None = None,
        lengths: TokenLengths | None = None,
        tokenizer: str | None = None,
    ) -> None:
        self.lengths = lengths or token_lengths(encoding_name, tokenizer)
        self.backend = self.lengths.backend
        self.threads = max(1, threads if threads is not None else default_threads())
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, None] = {}
        self._counting: dict[str, None] = {}  # the strings of the last batch submitted
        self._resolved: dict[str, int] = {}  # the last batch waited for
        self._previous: dict[str, int] = {}  # the one before it
        self._role_tokens: dict[tuple[str, ...], int] = {}  # the fixed tokens of a sequence of roles
        self.chars = 0  # characters in the examples added since the last submit

    def __enter__(self) -> ExampleCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def add(self, example: Mapping[str, Any]) -> Ticket:
        fixed, texts = example_parts(_counted_messages(example))
        return self._lookup(fixed, texts)

    def add_plain(self, roles: tuple[str, ...], contents: tuple[str, ...]) -> Ticket:
        """`add` for messages that are exactly a string role and a string content each (the
        common shape): the same count, without walking the messages again."""
        fixed = self._role_tokens.get(roles)
        if fixed is None:
            fixed = REPLY_PRIMING_TOKENS + sum(TOKENS_PER_MESSAGE + self.lengths(role) for role in roles)
            if len(self._role_tokens) < _ROLES_KEPT:
                self._role_tokens[roles] = fixed
        return self._lookup(fixed, contents)

    def _lookup(self, fixed: int, texts: Collection[str]) -> Ticket:
        lengths = self.lengths
        young = lengths._young
        pending, counting = self._pending, self._counting
        unknown: list[str] = []
        self.chars += sum(map(len, texts))
        for text in texts:
            found = young.get(text)
            if found is None:
                found = lengths.get(text)
                if found is None:
                    unknown.append(text)
                    if text not in counting:
                        pending[text] = None
                    continue
            fixed += found
        return fixed, unknown

    def submit(self) -> Submitted:
        texts = list(self._pending)
        self._pending = {}
        self._counting = dict.fromkeys(texts)
        self.chars = 0
        backend = self.backend
        if not texts or self.threads < 2:
            return Submitted(texts, backend.count_all(texts))
        workers = self.threads - 1  # the calling thread has Python work of its own
        if backend.count_detached is not None:
            pool = self._executor(workers)
            if backend.native_threads or workers == 1 or len(texts) < _MIN_PARALLEL_STRINGS:
                return Submitted(texts, futures=[pool.submit(backend.count_detached, texts, workers)])
            slices = [texts[i::workers] for i in range(workers)]
            return Submitted(texts, futures=[pool.submit(backend.count_detached, part, 1) for part in slices])
        if backend.parallel and len(texts) >= _MIN_PARALLEL_STRINGS:
            return Submitted(texts, self.lengths.count_all(texts, self._executor(workers), self.threads))
        return Submitted(texts, backend.count_all(texts))

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tokenize")
        return self._pool

    def wait(self, submitted: Submitted) -> None:
        resolved = dict(zip(submitted.texts, submitted.counts(), strict=True))
        self.lengths.put_all(resolved)
        self._previous, self._resolved = self._resolved, resolved

    def resolve(self) -> None:
        """Submit and wait at once."""
        self.wait(self.submit())

    def tokens(self, ticket: Ticket) -> int:
        fixed, unknown = ticket
        if unknown:
            resolved, previous = self._resolved, self._previous
            fixed += sum([resolved[text] if text in resolved else previous[text] for text in unknown])
        return fixed


def example_token_upper_bound(messages: Iterable[Mapping[str, Any]]) -> int:
    """A bound the real count never exceeds, computed without tokenizing.

    Every BPE token covers at least one UTF-8 byte and a character is at most 4 bytes, so an
    example whose bound is within a model's limit fits for sure; only the rare longer ones need
    tiktoken before the limit can be checked.
    """
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += 4 * len(value)
            elif isinstance(value, (list, dict)):
                total += len(orjson.dumps(value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _dpo_messages(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*example["input"]["messages"], *example["preferred_output"], *example["non_preferred_output"]]


def _counted_messages(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "messages" in example:
        return example["messages"]
    if "input" in example:
        return _dpo_messages(example)
    raise ValueError("not a training example: expected 'messages' (chat) or 'input' (DPO)")


def count_training_example(example: Mapping[str, Any], encoding: tiktoken.Encoding) -> int:
    """Tokens of one training line, chat or DPO (see the module docstring for the DPO rule)."""
    return count_example_tokens(_counted_messages(example), encoding)


def training_example_token_upper_bound(example: Mapping[str, Any]) -> int:
    """`example_token_upper_bound` for a whole training line, chat or DPO."""
    return example_token_upper_bound(_counted_messages(example))


def example_messages_for_stats(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The conversation a training line teaches, for role statistics (system/user present?).

    Chat: its messages. DPO: the input messages followed by the preferred output; the
    non-preferred output is what the model is taught to avoid, so it is not part of it.
    """
    if "messages" in example:
        return example["messages"]
    return [*example["input"]["messages"], *example["preferred_output"]]
