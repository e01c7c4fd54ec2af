"""The optional exact tokenizer (quicktok-v1, `pip install '.[fast]'`; the test extra installs it so
this check runs in CI): it must give tiktoken's count on every example of every public sample, and
is used only when it agrees with tiktoken at startup."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import orjson
import pytest

from tests.support.paths import DATA, HUATUO, TIKTOKEN_DIR

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))

quicktok = pytest.importorskip(
    "quicktok", reason="quicktok-v1 (the optional [fast] tokenizer) is not installed; tiktoken counts alone"
)

import tiktoken  # noqa: E402

from shared import tokens  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.datasets.pipeline import prepare  # noqa: E402

SYSTEM = "你是一名经验丰富的医生，请用简洁的中文回答。"
SAMPLES = [
    (DATA / "openai_chat_medicalgpt500.jsonl", {"system_prompt": SYSTEM}),
    (HUATUO, {"system_prompt": SYSTEM}),
    (DATA / "alpaca_zh400_en100.json", {}),
    (DATA / "toyhom_neike_sample500_gbk.csv", {"user_template": "科室：{department}\n{question}"}),
]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    def reset() -> None:
        get_settings.cache_clear()
        tokens.tokenizer_backend.cache_clear()
        tokens.token_lengths.cache_clear()

    reset()
    yield monkeypatch
    monkeypatch.undo()
    reset()


def use(monkeypatch: pytest.MonkeyPatch, tokenizer: str) -> None:
    monkeypatch.setenv("TUNEFORGE_TOKENIZER", tokenizer)
    get_settings.cache_clear()
    tokens.tokenizer_backend.cache_clear()
    tokens.token_lengths.cache_clear()


def run(path: Any, **options: Any) -> tuple[dict[str, Any], bytes]:
    train = io.BytesIO()
    report = prepare(io.BytesIO(path.read_bytes()), train_out=train, validation_out=io.BytesIO(), **options)
    return report.to_dict(), train.getvalue()


@pytest.mark.parametrize("model", ["gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125"])
def test_quicktok_counts_every_public_example_as_tiktoken_does(
    monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    encoding = tiktoken.get_encoding(tokens.encoding_name_for_model(model))
    use(monkeypatch, "quicktok")
    fast = tokens.tokenizer_backend(encoding.name)
    assert fast.name == "quicktok"
    for path, options in SAMPLES:
        use(monkeypatch, "tiktoken")
        reference_report, train = run(path, target_model=model, **options)
        use(monkeypatch, "quicktok")
        assert tokens.tokenizer_backend(encoding.name).name == "quicktok"
        for threads in (1, 2):
            assert run(path, target_model=model, tokenizer_threads=threads, **options) == (
                reference_report,
                train,
            )
        examples = [orjson.loads(line) for line in train.splitlines()]
        assert len(examples) == reference_report["train_examples"] >= 400
        texts = [
            value
            for example in examples
            for message in tokens._counted_messages(example)
            for value in message.values()
            if isinstance(value, str)
        ]
        expected = [len(encoding.encode_ordinary(text)) for text in texts]
        assert fast.count_all(texts) == expected
        assert fast.count_detached is not None and fast.count_detached(texts, 2) == expected
        for example in examples:
            messages = tokens._counted_messages(example)
            assert tokens.count_training_example(example, encoding) == sum(
                3 + sum(len(encoding.encode_ordinary(v)) for v in m.values() if isinstance(v, str))
                for m in messages
            ) + 3 + sum(1 for m in messages if "name" in m)


def test_quicktok_is_used_only_when_it_agrees_with_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, "auto")
    assert tokens.tokenizer_backend("o200k_base").name == "quicktok"
    use(monkeypatch, "tiktoken")
    assert tokens.tokenizer_backend("o200k_base").name == "tiktoken"

    real = quicktok.get_encoding

    class OffByOne:
        def __init__(self, name: str) -> None:
            self.inner = real(name)

        def count(self, text: str) -> int:
            return self.inner.count(text) + (text == "hello")  # wrong on one probe only

        def encode_batch(self, *args: Any) -> Any:
            return self.inner.encode_batch(*args)

    monkeypatch.setattr(quicktok, "get_encoding", OffByOne)
    use(monkeypatch, "auto")
    assert tokens.tokenizer_backend("o200k_base").name == "tiktoken"

    def missing(name: str) -> Any:
        raise RuntimeError(f"no encoding {name}")

    monkeypatch.setattr(quicktok, "get_encoding", missing)
    use(monkeypatch, "auto")
    assert tokens.tokenizer_backend("cl100k_base").name == "tiktoken"


def test_the_probes_cover_what_chat_data_holds() -> None:
    probes = "".join(tokens._PROBES)
    for sample in ("中文，。？", "ＡＢＣ", "<|endoftext|>", "\r\n", "😀", "don't", "123"):
        assert all(ch in probes for ch in sample)
    assert json.dumps(tokens._PROBES, ensure_ascii=False)  # plain strings only
