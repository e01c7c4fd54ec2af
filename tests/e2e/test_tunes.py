"""Tunes through the real worker and the sandbox: cancel, provider failure, quotes, budgets,
and the 4xx answers a client gets for requests that cannot work."""

from __future__ import annotations

import json

import orjson
import tiktoken

from tests.e2e.story import client, ready_dataset, start_tune, upload_dataset, wait_dataset, wait_tune
from tests.support.procs import wait_for


def _ready_dataset(http, size: int = 20):  # type: ignore[no-untyped-def]
    return ready_dataset(http, size, seed="5")


def test_cancel_a_running_tune(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url, "events": ["tune.cancelled"]})
    receiver.expect_secrets(endpoint.json()["secret"])
    dataset = _ready_dataset(http)
    # A slow clock for this one job keeps it running while we cancel it.
    tune = start_tune(http, dataset["id"], "0.2")
    wait_for(lambda: http.get(f"/v1/tunes/{tune['id']}").json()["status"] == "running", 60, what="running")
    assert http.post(f"/v1/tunes/{tune['id']}/cancel").status_code == 202
    done = wait_tune(http, tune["id"], timeout=30)
    assert done["status"] == "cancelled" and done["fine_tuned_model"] is None
    wait_for(lambda: receiver.requests, 15, what="tune.cancelled webhook")
    assert json.loads(receiver.requests[0].body)["data"]["status"] == "cancelled"
    again = http.post(f"/v1/tunes/{tune['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "tune_not_cancellable"


def test_provider_failure_is_recorded_and_announced(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url, "events": ["tune.failed"]})
    receiver.expect_secrets(endpoint.json()["secret"])
    dataset = _ready_dataset(http, 12)
    tune = http.post(
        "/v1/tunes",
        json={
            "dataset_id": dataset["id"],
            "base_model": "gpt-4o-mini",
            "metadata": {"sandbox_fail": "quota_exceeded"},
        },
    ).json()
    done = wait_tune(http, tune["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "quota_exceeded"
    wait_for(lambda: receiver.requests, 15, what="tune.failed webhook")
    assert json.loads(receiver.requests[0].body)["type"] == "tune.failed"


def test_quote_matches_an_independent_count(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = _ready_dataset(http, 40)
    lines = http.get(f"/v1/datasets/{dataset['id']}/content").text.splitlines()
    encoding = tiktoken.get_encoding("cl100k_base")
    # OpenAI's cookbook count: 3 per message, the tokens of every value, 3 to prime the reply.
    per_epoch = sum(
        sum(
            3 + len(encoding.encode(m["role"])) + len(encoding.encode(m["content"]))
            for m in orjson.loads(line)["messages"]
        )
        + 3
        for line in lines
    )
    quote = http.post(
        "/v1/quotes", json={"dataset_id": dataset["id"], "model": "gpt-3.5-turbo", "n_epochs": 3}
    ).json()
    assert quote["model"] == "gpt-3.5-turbo-0125"
    assert quote["billed_tokens"] == 3 * per_epoch
    assert abs(quote["cost_usd"] - 3 * per_epoch * 8.00 / 1_000_000) < 0.00005


def test_a_tune_above_its_budget_is_refused_before_upload(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = _ready_dataset(http)
    refused = http.post(
        "/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-4.1", "max_cost_usd": 0.0001}
    )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["quote"]["cost_usd"] > 0.0001
    assert http.get("/v1/tunes").json()["data"] == []


def test_requests_that_cannot_work_get_clear_4xx(stack, make_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    cases = [
        http.post("/v1/tunes", json={"base_model": "gpt-4o-mini"}),
        http.post("/v1/tunes", json={"dataset_id": "ds_missing", "base_model": "gpt-4o-mini"}),
        http.post("/v1/tunes", json={"dataset_id": "ds_x", "base_model": "gpt-4o-mini", "n_epochs": 0}),
        http.post("/v1/datasets", files={"file": ("e.jsonl", b"")}),
        http.post("/v1/datasets", files={"file": ("a.jsonl", b"{}\n")}, data={"preset": "nope"}),
        http.post("/v1/datasets", data={"preset": "huatuo"}),
        http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}),
        http.post(
            "/v1/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        ),
        http.get("/v1/tunes/tune_missing"),
        http.get("/v1/datasets/ds_missing/content", params={"split": "test"}),
    ]
    statuses = [r.status_code for r in cases]
    assert statuses == [400, 404, 400, 400, 400, 400, 400, 404, 404, 400]
    for response in cases:
        error = response.json()["error"]
        assert error["code"] and error["message"] and "type" in error and "param" in error

    dataset = _ready_dataset(http, 12)
    unknown_model = http.post("/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-9"})
    assert unknown_model.status_code == 400 and unknown_model.json()["error"]["param"] in (
        "base_model",
        "model",
    )

    not_data = tmp_path / "binary.jsonl"
    not_data.write_bytes(bytes(range(256)) * 10)
    failed = wait_dataset(http, upload_dataset(http, not_data)["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "binary_file"


def test_pause_and_resume_a_running_tune(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = _ready_dataset(http)
    tune = start_tune(http, dataset["id"], "0.1")
    refused = http.post(f"/v1/tunes/{tune['id']}/resume")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "tune_not_resumeable"
    wait_for(lambda: http.get(f"/v1/tunes/{tune['id']}").json()["status"] == "running", 60, what="running")
    assert http.post(f"/v1/tunes/{tune['id']}/pause").status_code == 202
    wait_for(lambda: http.get(f"/v1/tunes/{tune['id']}").json()["status"] == "paused", 30, what="paused")
    assert http.post(f"/v1/tunes/{tune['id']}/resume").status_code == 202
    done = wait_tune(http, tune["id"], timeout=60)
    assert done["status"] == "succeeded"
    statuses = [
        e["data"]["status"]
        for e in http.get(f"/v1/tunes/{tune['id']}/events").json()["data"]
        if e["kind"] == "status"
    ]
    assert statuses.index("paused") < len(statuses) - 1 and statuses[-1] == "succeeded"
    assert (
        "running" in statuses[statuses.index("paused") :] or "queued" in statuses[statuses.index("paused") :]
    )
