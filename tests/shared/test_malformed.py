"""The malformed corpus (tests/support/malformed.py) through the pure pipeline: every case ends as a
failed dataset with its code or as a report with exactly the expected rejected rows; nothing else
ever escapes (no other exception type, so no 500 and no worker crash)."""

from __future__ import annotations

import io
import os
import tracemalloc

import pytest

from shared.datasets.pipeline import DatasetInvalid, prepare
from tests.support.malformed import CASES, GOOD, MB, Case, jsonl, line
from tests.support.paths import TIKTOKEN_DIR

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))


def test_the_corpus_is_big_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input(case: Case) -> None:
    data = case.make()
    train, validation = io.BytesIO(), io.BytesIO()
    if case.fails:
        with pytest.raises(DatasetInvalid) as err:
            prepare(io.BytesIO(data), train_out=train, validation_out=validation, **case.options)
        assert err.value.code == case.fails, err.value.message
        assert err.value.message and err.value.param in ("file", "preset")
        return
    report = prepare(io.BytesIO(data), train_out=train, validation_out=validation, **case.options)
    assert [(e["line"], e["code"]) for e in report.errors] == case.errors, report.errors
    assert report.errors_total == report.skipped == len(case.errors)
    assert all(e["message"] for e in report.errors)
    if case.examples is not None:
        assert report.examples == case.examples
        assert len(train.getvalue().splitlines()) == case.examples
    assert [w["code"] for w in report.warnings if w["code"] in case.warnings] == list(case.warnings)


def _peak_while_preparing(path: str) -> int:
    tracemalloc.start()
    try:
        with open(path, "rb") as source:
            report = prepare(source, train_out=io.BytesIO(), validation_out=io.BytesIO())
        return tracemalloc.get_traced_memory()[1], report  # type: ignore[return-value]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["jsonl_line", "json_element"])
def test_huge_rows_are_rejected_in_bounded_memory(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    # 60 MB of one row, read from disk: the reader never holds more than the 16 MiB row cap
    # (plus its buffers), and the rows after it are read as usual.
    path = tmp_path / "big"
    with path.open("wb") as out:
        if kind == "jsonl_line":
            out.write(jsonl(*GOOD[:5]) + b'{"questions": "')
            for _ in range(60):
                out.write(b"x" * MB)
            out.write(b'", "answers": "a"}\n' + jsonl(*GOOD[5:]))
        else:
            out.write(b"[" + b",".join(line(r).strip() for r in GOOD[:5]) + b',\n{"questions": "')
            for _ in range(60):
                out.write(b"x" * MB)
            out.write(b'", "answers": "a"},' + b",".join(line(r).strip() for r in GOOD[5:]) + b"]")
    peak, report = _peak_while_preparing(str(path))
    code = "line_too_long" if kind == "jsonl_line" else "row_too_long"
    assert [(e["line"], e["code"]) for e in report.errors] == [(6 if kind == "jsonl_line" else 2, code)]
    assert report.examples == 10
    assert peak < 40 * MB, f"peak {peak / MB:.1f} MiB"


def test_gzip_bomb_is_stopped_at_the_cap() -> None:
    import gzip

    bomb = gzip.compress(b"\n" * (256 * MB), compresslevel=9)
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetInvalid) as err:
            prepare(
                io.BytesIO(bomb),
                train_out=io.BytesIO(),
                validation_out=io.BytesIO(),
                max_decompressed_bytes=16 * MB,
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code == "decompressed_too_large"
    assert "TUNEFORGE_DATASET_MAX_DECOMPRESSED_BYTES" in err.value.message
    assert peak < 16 * MB
