"""Dataset intake through the real API and worker: the reference kit's files in their own formats
and encodings, the nastiest malformed uploads (each ends failed or with its row errors, and the
worker goes on), the `format`/`encoding` form fields, and the upload size limit."""

from __future__ import annotations

import gzip
import io

import pytest

from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.malformed import GOOD, MB, jsonl, qa
from tests.support.paths import DATA, HUATUO
from tests.support.procs import Proc, free_port, wait_http

GBK_CSV = DATA / "toyhom_neike_sample500_gbk.csv"
SMALL_UPLOADS = {"TUNEFORGE_UPLOAD_MAX_BYTES": "1000"}


def _upload(http, name: str, data: bytes, **form: str) -> dict:  # type: ignore[no-untyped-def]
    response = http.post("/v1/datasets", files={"file": (name, io.BytesIO(data))}, data=form)
    assert response.status_code == 202, response.text
    return wait_dataset(http, response.json()["id"], timeout=120)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("huatuo.jsonl", lambda: HUATUO.read_bytes(), ("huatuo", "jsonl", "utf-8", None, 2000)),
        (
            "chat.jsonl",
            lambda: (DATA / "openai_chat_medicalgpt500.jsonl").read_bytes(),
            ("chat", "jsonl", "utf-8", None, 500),
        ),
        (
            "alpaca.json",
            lambda: (DATA / "alpaca_zh400_en100.json").read_bytes(),
            ("alpaca", "json", "utf-8", None, 500),
        ),
        ("toyhom.csv", lambda: GBK_CSV.read_bytes(), ("huatuo", "csv", "gb18030", None, 500)),
        (
            "toyhom.csv.gz",
            lambda: gzip.compress(GBK_CSV.read_bytes()),
            ("huatuo", "csv", "gb18030", "gzip", 500),
        ),
    ],
    ids=["huatuo", "chat", "alpaca", "gbk_csv", "gbk_csv_gzip"],
)
def test_reference_files_are_detected_through_the_api(stack, make_key, name, data, expected) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = _upload(http, name, data(), sample_size="40", seed="2")
    assert dataset["status"] == "ready", dataset
    report = dataset["report"]
    preset, fmt, encoding, compression, rows = expected
    assert (report["preset"], report["format"], report["encoding"], report["compression"]) == (
        preset,
        fmt,
        encoding,
        compression,
    )
    assert report["rows_read"] == rows and report["skipped"] == 0 and report["examples"] == 40
    assert report["format_detected"] is True and report["encoding_detected"] is True
    content = http.get(f"/v1/datasets/{dataset['id']}/content").text
    assert len(content.splitlines()) == 40 and "\ufffd" not in content
    if name.startswith("toyhom"):
        assert report["mapped_columns"] == {"questions": "ask", "answers": "answer"}
        assert report["duplicates"]["exact"] == 17


def test_nasty_uploads_fail_cleanly_and_the_worker_goes_on(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    bomb = gzip.compress(jsonl(*GOOD) + b"\n" * (256 * MB), compresslevel=9)
    assert len(bomb) < 400_000
    deep = jsonl(*GOOD) + b"[" * 100_000 + b"]" * 100_000 + b"\n" + jsonl(*(qa(i) for i in range(10, 20)))
    cases = {
        "bomb.jsonl.gz": (bomb, "failed", "decompressed_too_large"),
        "one_50mb_line.jsonl": (
            b'{"questions": "' + b"x" * (50 * MB) + b'", "answers": "a"}\n',
            "failed",
            "not_jsonl",
        ),
        "binary.bin": (bytes(range(256)) * 4096, "failed", "binary_file"),
        "truncated.json.gz": (
            gzip.compress(b"[" + b",".join(jsonl(q).strip() for q in GOOD))[:-9],
            "failed",
            "invalid_gzip",
        ),
        "deep.jsonl": (deep, "ready", None),
    }
    ids = {
        name: http.post("/v1/datasets", files={"file": (name, io.BytesIO(data))}).json()["id"]
        for name, (data, _, _) in cases.items()
    }
    for name, (_, status, code) in cases.items():
        dataset = wait_dataset(http, ids[name], timeout=120)
        assert dataset["status"] == status, (name, dataset)
        if code is not None:
            assert dataset["error"]["code"] == code and dataset["error"]["message"], name
    deep_report = http.get(f"/v1/datasets/{ids['deep.jsonl']}").json()["report"]
    assert [(e["line"], e["code"]) for e in deep_report["errors"]] == [(11, "too_deep")]
    assert deep_report["examples"] == 20
    assert stack.procs["worker"].alive()
    good = wait_dataset(http, upload_dataset(http, HUATUO, sample_size="12")["id"])
    assert good["status"] == "ready", good


def test_format_and_encoding_form_fields(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = _upload(
        http, "toyhom.txt", GBK_CSV.read_bytes(), format="csv", encoding="gbk", sample_size="20"
    )
    assert dataset["status"] == "ready", dataset
    assert dataset["options"]["format"] == "csv" and dataset["options"]["encoding"] == "gbk"
    report = dataset["report"]
    assert (report["format"], report["encoding"]) == ("csv", "gbk")
    assert report["format_detected"] is False and report["encoding_detected"] is False
    for form, code in (({"format": "xml"}, "invalid_format"), ({"encoding": "klingon"}, "invalid_encoding")):
        refused = http.post("/v1/datasets", files={"file": ("a.jsonl", b"{}\n")}, data=form)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == (code, next(iter(form)))


def test_an_upload_over_the_limit_answers_413(database, make_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # An API process of its own, started with a 1000-byte limit (the shared stack runs with the
    # default 512 MiB): the limit is read from the settings, as in production. The process
    # inherits the test environment (tests/conftest.py's TEST_ENV) with the limit added.
    from shared.config import get_settings

    port = free_port()
    api = Proc("api-small-uploads", ["api", "--port", str(port)], SMALL_UPLOADS, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", api)
        http = client(f"http://127.0.0.1:{port}", make_key())
        response = http.post("/v1/datasets", files={"file": ("big.jsonl", jsonl(*GOOD) * 3)})
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "payload_too_large" and error["param"] == "file"
        assert "1000 bytes" in error["message"] and "TUNEFORGE_UPLOAD_MAX_BYTES" in error["message"]
        small = http.post("/v1/datasets", files={"file": ("small.jsonl", jsonl(*GOOD[:1]))})
        assert small.status_code == 202, small.text  # under the limit: accepted by the same process
    finally:
        api.stop()
    assert not list((get_settings().blob_root / "datasets").rglob("*.part"))  # nothing left behind
