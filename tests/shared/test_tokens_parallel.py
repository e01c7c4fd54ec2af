"""Token counting in batches and threads (shared.tokens.ExampleCounter, the pipeline's batches): the
same counts, outputs and report as one row at a time, on the reference kit's real samples; each
distinct string is tokenized once; the cache stays bounded; tiktoken is the reference."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.paths import DATA, HUATUO, TIKTOKEN_DIR

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))

import tiktoken  # noqa: E402

from shared import tokens  # noqa: E402
from shared.datasets import pipeline  # noqa: E402
from shared.datasets.pipeline import prepare  # noqa: E402
from shared.datasets.presets import map_chat  # noqa: E402
from shared.tokens import cache as token_cache  # noqa: E402
from shared.tokens import counting, probes  # noqa: E402

CHAT = DATA / "openai_chat_medicalgpt500.jsonl"
ALPACA = DATA / "alpaca_zh400_en100.json"
SYSTEM = "你是一名经验丰富的医生，请用简洁的中文回答。"
SEPARATOR = "<|endoftext|>"


def reference_count(messages: list[dict[str, Any]], encoding: tiktoken.Encoding) -> int:
    """The cookbook formula written out with tiktoken alone (special-token text is text)."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += len(encoding.encode(value, disallowed_special=()))
            elif isinstance(value, (list, dict)):
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                total += len(encoding.encode(text, disallowed_special=()))
            if key == "name":
                total += 1
    return total


def public_texts() -> list[str]:
    """Every string of every public sample row (chat, huatuo, alpaca), plus role names."""
    texts = ["system", "user", "assistant", SYSTEM]
    for line in CHAT.read_text(encoding="utf-8").splitlines():
        texts += [m["content"] for m in json.loads(line)["messages"]]
    for line in HUATUO.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts += [v for v in (row.get("questions"), row.get("answers")) if isinstance(v, str)]
    for row in json.loads(ALPACA.read_text(encoding="utf-8")):
        texts += [v for v in row.values() if isinstance(v, str)]
    return texts


def tricky_texts() -> list[str]:
    return [
        "",
        " ",
        "ends with spaces   ",
        "   starts with spaces",
        "line\n\n\nbreaks\r\n",
        "a" + SEPARATOR + "b",  # the joined counter's separator inside a text
        SEPARATOR,
        "<|endofprompt|> <|im_start|> other special-token text",
        "emoji 👨‍👩‍👧‍👦 and 中文，标点。",
        "x" * 5000,  # longer than the cache keeps
        "数字123和English混合 don't",
    ]


@pytest.fixture(params=["tiktoken", "auto"])
def backend(request: pytest.FixtureRequest) -> str:
    """Both tokenizer choices, passed to the code explicitly; "auto" is quicktok when it is
    installed (the test extra installs it)."""
    return str(request.param)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_every_route_counts_what_tiktoken_counts(name: str, backend: str) -> None:
    encoding = tiktoken.get_encoding(name)
    texts = public_texts() + tricky_texts()
    expected = [len(encoding.encode(text, disallowed_special=())) for text in texts]
    chosen = tokens.tokenizer_backend(name, backend)
    assert chosen.count_all(texts) == expected
    assert chosen.count_detached is not None  # tiktoken's joined call works on the pinned version
    assert chosen.count_detached(texts, 2) == expected
    for threads in (1, 2, 3):
        lengths = tokens.TokenLengths(name, chosen)  # an empty cache: every text is tokenized
        with tokens.ExampleCounter(name, threads, lengths) as counter:
            batch = counter.add_texts(list(dict.fromkeys(texts)))
            counter.resolve()
            counted = counter.completed(*batch)
            assert [counted[text] for text in texts] == expected


def test_lone_surrogates_fall_back_to_tiktoken(backend: str) -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    texts = ["ok", "bad \ud800 half", "fine"]
    expected = [len(encoding.encode_ordinary(text)) for text in texts]
    chosen = tokens.tokenizer_backend("o200k_base", backend)
    assert chosen.count_all(texts) == expected
    assert chosen.count_detached is not None and chosen.count_detached(texts, 1) == expected


def run(data: bytes, **kwargs: Any) -> tuple[dict[str, Any], bytes, bytes]:
    train, validation = io.BytesIO(), io.BytesIO()
    report = prepare(io.BytesIO(data), train_out=train, validation_out=validation, **kwargs)
    return report.to_dict(), train.getvalue(), validation.getvalue()


def chat_with_trouble() -> bytes:
    """The public chat sample with the rows that make batches interesting: bad lines, a row over
    the token limit, duplicates and normalised duplicates, a tool call, DPO-less odd shapes."""
    lines = CHAT.read_bytes().splitlines()
    rng = random.Random(3)
    out: list[bytes] = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 37 == 5:
            out.append(b'{"messages": [{"role": "user"}]}')  # rejected by the checks
        if i % 41 == 7:
            out.append(b"not json")
        if i % 29 == 3:
            out.append(rng.choice(lines[: i + 1]))  # an exact duplicate of an earlier row
        if i % 31 == 9:
            row = json.loads(rng.choice(lines[: i + 1]))
            row["messages"][0]["content"] = row["messages"][0]["content"].replace("？", "?") + " "
            out.append(json.dumps(row, ensure_ascii=False).encode())  # a normalised duplicate
        if i == 200:
            huge = {
                "messages": [
                    {"role": "user", "content": "头痛" * 70_000},
                    {"role": "assistant", "content": "休息"},
                ]
            }
            out.append(json.dumps(huge, ensure_ascii=False).encode())  # over gpt-4o-mini's limit
        if i == 300:
            call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
            tool = {
                "messages": [
                    {"role": "user", "content": "查一下"},
                    {"role": "assistant", "content": None, "tool_calls": call},
                    {"role": "tool", "tool_call_id": "c1", "content": "结果"},
                    {"role": "assistant", "content": "好的", "weight": 1, "name": "doc"},
                ]
            }
            out.append(json.dumps(tool, ensure_ascii=False).encode())
    return b"\n".join(out) + b"\n"


CASES = [
    ("chat", chat_with_trouble, {"system_prompt": SYSTEM, "validation_fraction": 0.2, "seed": 3}),
    ("chat-sampled", chat_with_trouble, {"system_prompt": SYSTEM, "sample_size": 120, "seed": 5}),
    ("huatuo", lambda: HUATUO.read_bytes(), {"system_prompt": SYSTEM, "validation_fraction": 0.1}),
    ("alpaca", lambda: ALPACA.read_bytes(), {"target_model": "gpt-3.5-turbo-0125"}),
]


@pytest.mark.parametrize(("name", "data", "options"), CASES, ids=[c[0] for c in CASES])
def test_threads_and_batches_change_nothing(
    name: str, data: Any, options: dict[str, Any], backend: str
) -> None:
    raw = data()
    options = {**options, "tokenizer": backend}
    sequential = run(raw, tokenizer_threads=1, **options)
    # Small batches: many batches in flight, strings shared across them, every boundary crossed.
    for threads in (1, 2, 4):
        assert run(raw, tokenizer_threads=threads, batch_rows=7, **options) == sequential
    report, train, validation = sequential
    assert report["train_examples"] >= 10 and report["errors_total"] == report["skipped"]
    encoding = tiktoken.get_encoding(
        "cl100k_base" if "3.5" in options.get("target_model", "") else "o200k_base"
    )
    counted = [
        reference_count(counting._counted_messages(orjson.loads(x)), encoding) for x in train.splitlines()
    ]
    assert report["tokens"]["total"] == sum(counted)
    assert (report["tokens"]["min"], report["tokens"]["max"]) == (min(counted), max(counted))
    held_out = [
        reference_count(counting._counted_messages(orjson.loads(x)), encoding)
        for x in validation.splitlines()
    ]
    assert report["validation_tokens"] == sum(held_out)
    if name == "chat":
        codes = report["error_counts"]
        assert codes["too_many_tokens"] == 1 and codes["invalid_json"] and codes["message_missing_key"]
        assert report["duplicates"]["exact"] and report["duplicates"]["normalised"]
        lines = [e["line"] for e in report["errors"]]
        assert lines == sorted(lines)  # errors stay in input order across batches


class Recording:
    """A backend wrapper that remembers every text it is asked to tokenize."""

    def __init__(self, inner: Any) -> None:
        self.seen: list[str] = []
        self.inner = inner
        self.name = inner.name
        self.parallel = inner.parallel
        self.native_threads = inner.native_threads
        self.count_detached = self._detached if inner.count_detached else None

    def count_all(self, texts: list[str]) -> list[int]:
        self.seen += texts
        return self.inner.count_all(texts)  # type: ignore[no-any-return]

    def _detached(self, texts: list[str], threads: int) -> list[int]:
        self.seen += texts
        return self.inner.count_detached(texts, threads)  # type: ignore[no-any-return]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_shared_system_prompt_is_tokenized_once(threads: int, backend: str) -> None:
    recording = Recording(tokens.tokenizer_backend("o200k_base", backend))
    fresh = tokens.TokenLengths("o200k_base", recording)  # type: ignore[arg-type]
    report, train, _ = run(
        CHAT.read_bytes(),
        system_prompt=SYSTEM,
        tokenizer_threads=threads,
        token_lengths=fresh,
        batch_rows=16,  # dozens of batches, two in flight at a time
    )
    assert report["train_examples"] == 500
    assert recording.seen.count(SYSTEM) == 1
    assert recording.seen.count("assistant") == 1
    # Every distinct string once (the sample's strings are short enough to stay cached).
    assert len(recording.seen) == len(set(recording.seen))


def test_the_cache_is_bounded() -> None:
    lengths = tokens.TokenLengths("o200k_base")
    rng = random.Random(1)
    for i in range(3 * token_cache._CACHE_SIZE):
        lengths.put(f"{i} {rng.random()}", 1)
    assert len(lengths._young) + len(lengths._old) <= 2 * token_cache._CACHE_SIZE
    big = {("长" * 4000) + str(i): 1 for i in range(600)}  # about 2.4 M characters
    lengths.put_all(big)
    lengths.put_all({"x" * (token_cache._CACHE_MAX_CHARS + 1): 1})
    kept = sum(map(len, lengths._young)) + sum(map(len, lengths._old))
    assert kept <= 2 * token_cache._CACHE_GENERATION_CHARS + 600 * 4010
    assert "x" * (token_cache._CACHE_MAX_CHARS + 1) not in lengths._young


def test_a_string_counting_in_the_batch_before_is_not_counted_again() -> None:
    recording = Recording(tokens.tokenizer_backend("o200k_base", "tiktoken"))
    lengths = tokens.TokenLengths("o200k_base", recording)  # type: ignore[arg-type]
    long_text = "很长的系统提示。" * 600  # over the cache's per-string limit: never cached
    encoding = tiktoken.get_encoding("o200k_base")

    def chat(system: str, question: str) -> dict[str, Any]:
        return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}

    def expected(question: str) -> int:
        return reference_count(chat(long_text, question)["messages"], encoding)

    with tokens.ExampleCounter("o200k_base", 2, lengths) as counter:
        first = counter.add(chat(long_text, "问题一"))
        one = counter.submit()
        second = counter.add(chat(long_text, "问题二"))  # in flight: not again
        two = counter.submit()
        counter.wait(one)
        assert counter.tokens(first) == expected("问题一")
        counter.wait(two)
        assert counter.tokens(second) == expected("问题二")
        third = counter.add(chat(long_text, "问题三"))  # not cached: counted again
        counter.resolve()
        assert counter.tokens(third) == expected("问题三")
    assert recording.seen.count(long_text) == 2


def test_batch_contents_count_as_tickets_do_and_in_flight_strings_wait_for_their_batch() -> None:
    recording = Recording(tokens.tokenizer_backend("o200k_base", "tiktoken"))
    lengths = tokens.TokenLengths("o200k_base", recording)  # type: ignore[arg-type]
    long_text = "很长的系统提示。" * 600  # over the cache's per-string limit: never cached
    prompt = "你是医生。"  # short: cached once counted
    encoding = tiktoken.get_encoding("o200k_base")
    roles = ("system", "user")

    def expected(system: str, question: str) -> int:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return reference_count(messages, encoding)

    with tokens.ExampleCounter("o200k_base", 2, lengths) as counter:
        first = counter.add_texts([long_text, prompt, "问题一"])
        one = counter.submit()
        second = counter.add_texts([long_text, "问题二"])  # in flight in the batch before: deferred
        assert second[1] == [long_text]
        two = counter.submit()
        counter.wait(one)
        counted = counter.completed(*first)
        assert counter.fixed_tokens(roles) + counted[prompt] + counted["问题一"] == expected(prompt, "问题一")
        counter.wait(two)
        counted = counter.completed(*second)
        assert counter.fixed_tokens(roles) + counted[long_text] + counted["问题二"] == expected(
            long_text, "问题二"
        )
        third = counter.add_texts([prompt, "问题三"])  # the prompt is cached now
        assert third[0] == {prompt: len(encoding.encode(prompt))} and third[1] == []
        counter.resolve()
        assert counter.completed(*third)["问题三"] == len(encoding.encode("问题三"))
    assert recording.seen.count(long_text) == 1 and recording.seen.count(prompt) == 1


def test_plain_chat_rows_map_exactly_as_map_chat_does() -> None:
    rows: list[Any] = [json.loads(line) for line in CHAT.read_text(encoding="utf-8").splitlines()[:50]]
    rows += [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\u3000"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "developer", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": ["assistant"], "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 0}]},
        {"messages": [{"content": "x", "role": "assistant"}, {"role": "system", "content": "s"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "tool", "content": "t"}, {"role": "assistant", "content": "a"}]},
        {"messages": []},
        {"messages": "text"},
        {"messages": [["user", "hi"]]},
    ]
    for row in rows:
        for prompt in (None, SYSTEM):
            plain = pipeline.plain_chat_example(row, prompt)
            try:
                mapped = map_chat(row, prompt)
            except Exception:  # noqa: BLE001 - rejected: the fast road must have declined it too
                assert plain is None, row
                continue
            if plain is not None:
                example, (roles, contents) = plain
                assert example == mapped
                assert roles == tuple(m["role"] for m in mapped["messages"])
                assert contents == tuple(m["content"] for m in mapped["messages"])


def test_the_benchmark_runs(tmp_path: Path) -> None:
    """bench/datasets.py end to end on a tiny set (its numbers are not checked here)."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench" / "datasets.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--examples", "300", "--repeat", "1", "--dir", str(tmp_path)]
        + ["--variants", "cookbook,floor,floor-joined,pipeline"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| pipeline (tiktoken)" in done.stdout and "tokens, every line" in done.stdout


@pytest.mark.parametrize("name", sorted(probes._PROBE_COUNTS))
def test_recorded_probe_counts_are_tiktokens(name: str) -> None:
    """The fast tokenizer is checked against these at startup instead of loading tiktoken."""
    encoding = tiktoken.get_encoding(name)
    assert probes._PROBE_COUNTS[name] == tuple(len(encoding.encode_ordinary(p)) for p in probes._PROBES)


def test_quicktok_runs_leave_tiktoken_unloaded(tmp_path: Path) -> None:
    """With the fast tokenizer, the pipeline never loads tiktoken's tables (80 MiB for o200k)."""
    import subprocess
    import sys

    pytest.importorskip("quicktok", reason="quicktok-v1 (the optional [fast] tokenizer) is not installed")
    script = (
        "import io, tiktoken.registry as r\n"
        "from shared.datasets.pipeline import prepare\n"
        f"prepare(open({str(CHAT)!r}, 'rb'), train_out=io.BytesIO(), validation_out=io.BytesIO())\n"
        "print(sorted(r.ENCODINGS))\n"
    )
    env = {
        **os.environ,
        "TUNEFORGE_TOKENIZER": "auto",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_garbage_collector_is_left_as_it_was() -> None:
    """prepare() pauses the cyclic GC while it runs (shared.datasets.gc_pause) and puts it back."""
    import gc

    assert gc.isenabled()
    run(CHAT.read_bytes())
    assert gc.isenabled()
    gc.disable()
    try:
        run(CHAT.read_bytes())
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(Exception):  # noqa: B017 - any failure: the GC must still come back
        run(b"\x00\x01binary junk" * 100)
    assert gc.isenabled()
