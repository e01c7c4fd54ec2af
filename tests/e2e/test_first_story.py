"""The first story on Postgres, Redis, a Celery worker process and the sandbox over HTTP."""

from __future__ import annotations

from tests.e2e.story import client, run_first_story, upload_dataset, wait_dataset


def test_first_story(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    try:
        secret = run_first_story(stack.api_url, key, receiver)
    except Exception:
        print(stack.logs())
        raise
    # Nothing secret reaches the logs of any process.
    logs = "\n".join(p.log_path.read_text(errors="replace") for p in stack.procs.values())
    for value in (key, secret, secret.removeprefix("whsec_")):
        assert value not in logs


def test_bad_rows_are_reported_by_line(stack, make_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"questions": "头痛怎么办？", "answers": "多休息，必要时就医。"}\n'
        "this is not json\n"
        '{"questions": "发烧了怎么办？"}\n'
        '{"questions": "咳嗽怎么办？", "answers": "多喝水。"}\n'
        '{"questions": "失眠怎么办？", "answers": "规律作息。"}\n',
        encoding="utf-8",
    )
    http = client(stack.api_url, make_key())
    dataset = wait_dataset(http, upload_dataset(http, path, preset="huatuo")["id"])
    assert dataset["status"] == "failed"
    assert dataset["error"]["code"] == "too_few_examples"
    report = dataset["report"]
    assert report["examples"] == 3
    errors = {(e["line"], e["code"]) for e in report["errors"]}
    assert errors == {(2, "invalid_json"), (3, "missing_field")}
    assert "answers" in next(e["message"] for e in report["errors"] if e["line"] == 3)
    # The worker survived: a good dataset still goes through.
    good = wait_dataset(http, upload_dataset(http, _good(tmp_path), preset="huatuo")["id"])
    assert good["status"] == "ready"


def _good(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "good.jsonl"
    path.write_text(
        "".join(f'{{"questions": "问题{i}？", "answers": "回答{i}。"}}\n' for i in range(12)),
        encoding="utf-8",
    )
    return path
