"""The optional exact tokenizer (quicktok-v1, `pip install '.[fast]'`; the test extra installs it so
this check runs in CI): it must give tiktoken's count on every example of every public sample, and
is used only when it agrees with tiktoken at startup."""

from __future__ import annotations

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


def test_without_quicktok_auto_counts_with_tiktoken() -> None:
    """A process where quicktok cannot be imported (the default install) counts with tiktoken,
    with the same report."""
    script = (
        "import io, sys\n"
        "sys.modules['quicktok'] = None  # this child only: `import quicktok` raises ImportError\n"
        "from shared import tokens\n"
        "from shared.datasets.pipeline import prepare\n"
        "print(tokens.tokenizer_backend('o200k_base', 'auto').name)\n"
        f"data = open({str(SAMPLES[0][0])!r}, 'rb').read()\n"
        "out = io.BytesIO()\n"
        "report = prepare(io.BytesIO(data), train_out=out, validation_out=io.BytesIO(), tokenizer='auto')\n"
        "print(report.tokens['total'], report.train_examples)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    name, figures = done.stdout.splitlines()
    assert name == "tiktoken"
    reference, _ = run(SAMPLES[0][0], tokenizer="tiktoken")
    assert figures == f"{reference['tokens']['total']} {reference['train_examples']}"


def test_the_probes_cover_what_chat_data_holds() -> None:
    joined = "".join(probes._PROBES)
    for sample in ("中文，。？", "ＡＢＣ", "<|endoftext|>", "\r\n", "😀", "don't", "123"):
        assert all(ch in joined for ch in sample)
    assert json.dumps(probes._PROBES, ensure_ascii=False)  # plain strings only
