"""The fast roads of dedup.py and normalise.py give the answers of the plain definitions:
`normalise_text` (common separators deleted with str.replace) equals the regex alone,
`normalise_many` (numpy, a batch at a time) equals `normalise_text`, and `Deduplicator` (one
fingerprint pair per unique example, common-shape fingerprints from string hashes, batched or not)
classifies every example as two sets of JSON fingerprints would."""

from __future__ import annotations

import json
import random
import unicodedata
from typing import Any

import orjson
import pytest

from shared.datasets import normalise
from shared.datasets.dedup import Deduplicator, FingerprintMap, plain_messages
from shared.datasets.normalise import normalise_text, normalise_text_reference
from tests.support.paths import DATA, HUATUO

ALPHABET = (
    "头痛怎么办多休息喝水中文ＡＢＣａｂｃ１２３①ﬁ℃㎡ÄäÖßẞİıΣσς"
    "abcXYZ0189_ \t\n\r\u3000\u00a0\u200b，。？！、：；“”‘’（）《》【】…—·,.?!:;'\"()[]{}<>-/\\|@#$%^&*+=~`"
    "e\u0301a\u0308😀👍🏽\ufeff"
)


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40)))


def public_strings() -> list[str]:
    texts: list[str] = []
    for line in (DATA / "openai_chat_medicalgpt500.jsonl").read_text(encoding="utf-8").splitlines():
        texts += [m["content"] for m in json.loads(line)["messages"]]
    for line in HUATUO.read_text(encoding="utf-8").splitlines():
        texts += [v for v in json.loads(line).values() if isinstance(v, str)]
    for row in json.loads((DATA / "alpaca_zh400_en100.json").read_text(encoding="utf-8")):
        texts += [v for v in row.values() if isinstance(v, str)]
    return texts


def test_normalise_text_is_the_regex_definition() -> None:
    rng = random.Random(11)
    texts = public_strings() + [random_text(rng) for _ in range(20_000)]
    texts += ["", "_", "__a__", "Ｈｅｌｌｏ， Ｗｏｒｌｄ！", "ﬁ", "ẞ", "\u0345", "İstanbul", "ΣΑΣ"]
    for text in texts:
        assert normalise_text(text) == normalise_text_reference(text), repr(text)
    assert normalise_text("头痛怎么办？") == normalise_text("头痛怎么办?") == "头痛怎么办"


def reference_duplicate(seen_exact: set[bytes], seen_normalised: set[bytes], example: Any) -> str | None:
    """The definition: exact = same JSON with sorted keys; normalised = same after every string but
    roles and keys is normalised; the first occurrence is kept."""

    def normalised(value: Any) -> Any:
        if isinstance(value, str):
            return normalise_text_reference(value)
        if isinstance(value, dict):
            return {k: (v if k == "role" else normalised(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [normalised(v) for v in value]
        return value

    exact = orjson.dumps(example, option=orjson.OPT_SORT_KEYS)
    if exact in seen_exact:
        return "exact"
    seen_exact.add(exact)
    key = orjson.dumps(normalised(example), option=orjson.OPT_SORT_KEYS)
    if key in seen_normalised:
        return "normalised"
    seen_normalised.add(key)
    return None


def variant(example: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy that may differ in key order, case, punctuation or spacing, or really differ."""
    copy = json.loads(json.dumps(example))
    messages = copy.get("messages") or copy.get("input", {}).get("messages") or []
    for message in messages:
        if isinstance(message.get("content"), str):
            choice = rng.random()
            if choice < 0.3:
                message["content"] = message["content"].upper() + " !"
            elif choice < 0.4:
                message["content"] += "。"
            elif choice < 0.45:
                message["content"] += "不同"
        if rng.random() < 0.3:
            items = list(message.items())
            message.clear()
            message.update(reversed(items))
    return copy


@pytest.mark.parametrize("batched", [False, True])
def test_deduplicator_classifies_as_the_definition(batched: bool) -> None:
    if batched:
        pytest.importorskip("numpy", reason="numpy (the [fast] extra) is not installed")
    rng = random.Random(5)
    base: list[dict[str, Any]] = []
    for i in range(300):
        question, answer = random_text(rng) or "q", random_text(rng) or "a"
        shape = rng.random()
        if shape < 0.6:
            example: dict[str, Any] = {
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            }
        elif shape < 0.7:  # a name: not the plain shape
            example = {
                "messages": [
                    {"role": "user", "content": question, "name": "n"},
                    {"role": "assistant", "content": answer},
                ]
            }
        elif shape < 0.8:  # tools beside the messages
            example = {"messages": [{"role": "user", "content": question}], "tools": [{"q": question}]}
        elif shape < 0.9:  # DPO
            example = {
                "input": {"messages": [{"role": "user", "content": question}]},
                "preferred_output": [{"role": "assistant", "content": answer}],
                "non_preferred_output": [{"role": "assistant", "content": answer + "x"}],
            }
        else:  # content parts
            example = {"messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]}
        base.append(example)
        if i % 3 == 0:
            base.append(variant(example, rng))
    stream = [rng.choice(base) if rng.random() < 0.3 else variant(rng.choice(base), rng) for _ in range(3000)]
    dedup = Deduplicator(batched=batched)
    exact: set[bytes] = set()
    normalised: set[bytes] = set()
    got: list[str | None] = []
    plains: list[Any] = []
    for example in stream:  # runs of plain examples a batch at a time, as the pipeline does
        plain = plain_messages(example)
        if plain is not None:
            plains.append(plain)
            continue
        got += dedup.duplicates_of_plain(plains) if plains else []
        plains = []
        got.append(dedup.duplicate(example))
    got += dedup.duplicates_of_plain(plains) if plains else []
    want = [reference_duplicate(exact, normalised, example) for example in stream]
    assert got == want
    assert dedup.to_dict() == {"exact": want.count("exact"), "normalised": want.count("normalised")}
    assert want.count("exact") > 100 and want.count("normalised") > 100


def test_plain_messages_ignores_key_order_and_declines_other_shapes() -> None:
    a = {"messages": [{"role": "user", "content": "x"}, {"content": "y", "role": "assistant"}]}
    assert plain_messages(a) == (("user", "assistant"), ("x", "y"))
    assert plain_messages({"messages": [{"role": "user", "content": None}]}) is None
    assert plain_messages({"messages": [{"role": "user", "content": "x", "name": "n"}]}) is None
    assert plain_messages({"messages": [], "tools": []}) is None
    dedup = Deduplicator()
    b = {"messages": [{"content": "x", "role": "user"}, {"role": "assistant", "content": "y"}]}
    assert dedup.duplicate(a) is None and dedup.duplicate(b) == "exact"


def test_fingerprint_map_keeps_the_first_value_and_grows() -> None:
    rng = random.Random(9)
    keys = [rng.getrandbits(64) | 1 for _ in range(50_000)]
    table = FingerprintMap()
    assert all(table.setdefault(k, i + 1) == 0 for i, k in enumerate(keys))
    assert all(table.setdefault(k, 7) == i + 1 for i, k in enumerate(keys))
    assert table.count == 50_000
    assert table.nbytes <= 4 * 16 * 50_000  # at most half the pairs in use, 16 bytes a pair
    with pytest.raises(ValueError):
        table.setdefault(0, 1)


def test_normalise_text_handles_what_nfkc_changes() -> None:
    text = "Ｆｕｌｌ－ｗｉｄｔｈ ﬁ ①"
    assert normalise_text(text) == normalise_text_reference(text)
    assert unicodedata.is_normalized("NFKC", normalise_text(text))


def test_normalise_many_is_normalise_text() -> None:
    pytest.importorskip("numpy", reason="numpy (the [fast] extra) is not installed")
    rng = random.Random(12)
    texts = public_strings() + [random_text(rng) for _ in range(20_000)]
    texts += ["", "_", "ﬁ", "ẞ", "\u0345", "İstanbul", "ΣΑΣ", "a\ud800b", "\ud83d\ude00x", "𠀀字"]
    texts += ["각\u11a8", "가\u11a8", "\u1100\u1161", "x\U0010ffff", "长" * 300_000]  # over one chunk
    plane = [chr(code) for code in range(0x10000)]
    texts += plane + ["가" + ch + "a" for ch in plane] + ["A" + ch + "\u0301" for ch in plane]
    texts += ["", "", "，", "", "a", "", ""]  # empty strings together and last
    expected = [normalise_text(text).encode("utf-16-le", "surrogatepass") for text in texts]
    assert normalise.normalise_many(texts) == expected
    assert normalise.normalise_many(texts[::-1]) == expected[::-1]
    assert normalise.normalise_many([]) == []


def test_the_batch_table_folds_only_what_needs_no_context() -> None:
    """A code unit the table folds by itself is a word character with a one-character case fold
    that NFKC leaves alone and that can never compose with the character before it."""
    pytest.importorskip("numpy", reason="numpy (the [fast] extra) is not installed")
    seconds = set()
    for code in range(0x110000):
        parts = unicodedata.decomposition(chr(code)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(int(parts[1], 16))
    seconds |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
    table = normalise._table().tolist()
    for code, mapped in enumerate(table):
        ch = chr(code)
        if mapped == 0:
            assert not ch.isalnum(), hex(code)
        elif mapped != normalise._HARD:
            assert ch.isalnum() and ch.casefold() == chr(mapped), hex(code)
            assert unicodedata.normalize("NFKC", ch) == ch and not unicodedata.combining(ch), hex(code)
            assert code not in seconds, hex(code)
    assert all(table[code] == normalise._HARD for code in range(0xD800, 0xE000))


def test_plain_batches_of_any_size_classify_as_the_definition() -> None:
    """Long batches (repeats inside one batch) and many of them (runs merging), as the pipeline
    sends them."""
    pytest.importorskip("numpy", reason="numpy (the [fast] extra) is not installed")
    rng = random.Random(9)
    base = [
        {
            "messages": [
                {"role": "user", "content": random_text(rng) or "q"},
                {"role": "assistant", "content": "答"},
            ]
        }
        for _ in range(2000)
    ]
    stream = [
        rng.choice(base) if rng.random() < 0.2 else variant(rng.choice(base), rng) for _ in range(12_000)
    ]
    plains = [plain_messages(example) for example in stream]
    dedup, got, start = Deduplicator(batched=True), [], 0
    while start < len(plains):
        size = rng.choice([1, 2, 7, 64, 500, 2048])
        got += dedup.duplicates_of_plain(plains[start : start + size])
        start += size
    exact: set[bytes] = set()
    normalised: set[bytes] = set()
    assert got == [reference_duplicate(exact, normalised, example) for example in stream]
    assert got.count("exact") > 1000 and got.count("normalised") > 1000


def test_sorted_runs_hold_what_a_dict_holds() -> None:
    np = pytest.importorskip("numpy", reason="numpy (the [fast] extra) is not installed")
    from shared.datasets.sorted_runs import SortedRuns

    rng = random.Random(3)
    runs, reference = SortedRuns(), {}
    for _ in range(300):
        fresh = {rng.getrandbits(64): rng.getrandbits(64) for _ in range(rng.choice([1, 5, 40, 300]))}
        fresh = {k: v for k, v in fresh.items() if k not in reference}
        probe = list(fresh) + rng.sample(sorted(reference), min(20, len(reference))) + [rng.getrandbits(64)]
        found, values = runs.lookup(np.array(probe, dtype=np.uint64))
        assert found.tolist() == [k in reference for k in probe]
        assert [int(v) for v, f in zip(values, found, strict=True) if f] == [
            reference[k] for k in probe if k in reference
        ]
        runs.add(np.array(list(fresh), dtype=np.uint64), np.array(list(fresh.values()), dtype=np.uint64))
        reference.update(fresh)
    assert len(runs) == len(reference) and runs.nbytes == 16 * len(reference)
    assert len(runs._runs) <= 2 * len(reference).bit_length()
