"""The optional exact tokenizer (quicktok-v1, `pip install '.[fast]'`; the test extra installs it so
this check runs in CI): it must give tiktoken's count on every example of every public sample, and
is used only when it agrees with tiktoken at startup."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.support.paths import DATA, HUATUO, REPO, TIKTOKEN_DIR

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))

quicktok = pytest.importorskip(
    "quicktok", reason="quicktok-v1 (the optional [fast] tokenizer) is not installed; tiktoken counts alone"
)

import tiktoken  # noqa: E402

from shared import tokens  # noqa: E402
from shared.datasets.pipeline import prepare  # noqa: E402
from shared.tokens import counting, probes  # noqa: E402

SYSTEM = "你是一名经验丰富的医生，请用简洁的中文回答。"
SAMPLES = [
    (DATA / "openai_chat_medicalgpt500.jsonl", {"system_prompt": SYSTEM}),
    (HUATUO, {"system_prompt": SYSTEM}),
    (DATA / "alpaca_zh400_en100.json", {}),
    (DATA / "toyhom_neike_sample500_gbk.csv", {"user_template": "科室：{department}\n{question}"}),
]


def run(path: Any, **options: Any) -> tuple[dict[str, Any], bytes]:
    train = io.BytesIO()
    report = prepare(io.BytesIO(path.read_bytes()), train_out=train, validation_out=io.BytesIO(), **options)
    return report.to_dict(), train.getvalue()


@pytest.mark.parametrize("model", ["gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125"])
def test_quicktok_counts_every_public_example_as_tiktoken_does(model: str) -> None:
    encoding = tiktoken.get_encoding(tokens.encoding_name_for_model(model))
    fast = tokens.tokenizer_backend(encoding.name, "quicktok")
    assert fast.name == "quicktok"
    assert tokens.tokenizer_backend(encoding.name, "tiktoken").name == "tiktoken"
    for path, options in SAMPLES:
        reference_report, train = run(path, target_model=model, tokenizer="tiktoken", **options)
        for threads in (1, 2):
            assert run(
                path, target_model=model, tokenizer="quicktok", tokenizer_threads=threads, **options
            ) == (reference_report, train)
        examples = [orjson.loads(line) for line in train.splitlines()]
        assert len(examples) == reference_report["train_examples"] >= 400
        texts = [
            value
            for example in examples
            for message in counting._counted_messages(example)
            for value in message.values()
            if isinstance(value, str)
        ]
        expected = [len(encoding.encode_ordinary(text)) for text in texts]
        assert fast.count_all(texts) == expected
        assert fast.count_detached is not None and fast.count_detached(texts, 2) == expected
        lengths = tokens.TokenLengths(encoding.name, fast)
        for example in examples:
            messages = counting._counted_messages(example)
            fixed, strings = tokens.example_parts(messages)
            assert fixed + sum(map(lengths, strings)) == sum(
                3 + sum(len(encoding.encode_ordinary(v)) for v in m.values() if isinstance(v, str))
                for m in messages
            ) + 3 + sum(1 for m in messages if "name" in m)


def test_quicktok_is_used_only_when_it_agrees_with_tiktoken() -> None:
    assert tokens.tokenizer_backend("o200k_base", "auto").name == "quicktok"
    assert tokens.tokenizer_backend("o200k_base", "tiktoken").name == "tiktoken"
    real = quicktok.get_encoding("o200k_base")
    verified = tokens.fast_backend("o200k_base", real)
    assert verified is not None and verified.name == "quicktok"

    class OffByOne:
        """quicktok's tokenizer, wrong on one probe only."""

        def count(self, text: str) -> int:
            return real.count(text) + (text == "hello")  # type: ignore[no-any-return]

        def encode_batch(self, *args: Any) -> Any:
            return real.encode_batch(*args)

    class BatchOffByOne(OffByOne):
        """Right one text at a time, wrong in its batch call."""

        def count(self, text: str) -> int:
            return real.count(text)  # type: ignore[no-any-return]

        def encode_batch(self, texts: list[str], *args: Any) -> Any:
            return real.encode_batch([t + " x" if t == "hello" else t for t in texts], *args)

    assert tokens.fast_backend("o200k_base", OffByOne()) is None
    assert tokens.fast_backend("o200k_base", BatchOffByOne()) is None
    # An encoding that quicktok does not ship: declined, so tiktoken would count it.
    assert tokens.fast_backend("p50k_base") is None


def test_the_default_install_gives_the_same_outputs() -> None:
    """A process where neither quicktok nor numpy can be imported (the install without the [fast]
    extra) counts with tiktoken and normalises strings for dedup one at a time, with the same
    outputs and report."""
    path = DATA / "openai_chat_medicalgpt500.jsonl"
    lines = path.read_bytes().splitlines()
    variants = []
    for line in lines[40:80]:
        row = json.loads(line)
        for message in row["messages"]:
            message["content"] = message["content"].replace("？", "?").upper() + " !!"
        variants.append(json.dumps(row, ensure_ascii=False).encode())
    for line in lines[80:90]:
        for tail in ("\U0001f600 Ｆｕｌｌ ﬁ", " FULL fi"):  # NFKC and beyond the BMP: the slow road
            row = json.loads(line)
            row["messages"][-1]["content"] += tail
            variants.append(json.dumps(row, ensure_ascii=False).encode())
    # Duplicates, exact and up to punctuation and case, so the two dedup roads have work.
    data = b"\n".join(lines + lines[:40] + variants + variants[-10:]) + b"\n"
    script = (
        "import hashlib, io, json, sys\n"
        "sys.modules['quicktok'] = sys.modules['numpy'] = None  # this child only: imports fail\n"
        "from shared import tokens\n"
        "from shared.datasets import dedup\n"
        "from shared.datasets.pipeline import prepare\n"
        "print(tokens.tokenizer_backend('o200k_base', 'auto').name, dedup.Deduplicator().batched)\n"
        "out = io.BytesIO()\n"
        "report = prepare(sys.stdin.buffer, train_out=out, validation_out=io.BytesIO(), tokenizer='auto',\n"
        "                 system_prompt=sys.argv[1], validation_fraction=0.1)\n"
        "print(hashlib.sha256(out.getvalue()).hexdigest())\n"
        "print(json.dumps(report.to_dict(), sort_keys=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script, SYSTEM],
        input=data,
        capture_output=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    backends, digest, report = done.stdout.decode().splitlines()
    assert backends == "tiktoken False"
    train = io.BytesIO()
    expected = prepare(
        io.BytesIO(data),
        train_out=train,
        validation_out=io.BytesIO(),
        tokenizer="quicktok",
        system_prompt=SYSTEM,
        validation_fraction=0.1,
    ).to_dict()
    assert json.loads(report) == json.loads(json.dumps(expected, sort_keys=True))
    assert digest == hashlib.sha256(train.getvalue()).hexdigest()
    assert expected["duplicates"] == {"exact": 50, "normalised": 50}


def test_the_probes_cover_what_chat_data_holds() -> None:
    joined = "".join(probes._PROBES)
    for sample in ("中文，。？", "ＡＢＣ", "<|endoftext|>", "\r\n", "😀", "don't", "123"):
        assert all(ch in joined for ch in sample)
    assert json.dumps(probes._PROBES, ensure_ascii=False)  # plain strings only
