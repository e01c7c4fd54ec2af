"""`Idempotency-Key` on creating POSTs: one object per key, replays of the stored answer, 422 for
another body under the same key, 409 while the first request is still running."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select

from shared.db import session_scope
from shared.models import IdempotencyRecord
from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.paths import HUATUO


def test_concurrent_tune_creates_with_one_key_make_one_tune(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    dataset = wait_dataset(http, upload_dataset(http, HUATUO, preset="huatuo", sample_size="12")["id"])
    body = {"dataset_id": dataset["id"], "base_model": "gpt-4o-mini", "n_epochs": 1}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "create-tune-1"}

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{stack.api_url}/v1/tunes", json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(20)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 409} and 202 in statuses
    created = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(created) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["error"]["code"] == "idempotency_key_in_use"
    assert [t["id"] for t in http.get("/v1/tunes").json()["data"]] == list(created)

    replay = post(0)
    assert replay.status_code == 202 and replay.json()["id"] in created
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == f"/v1/tunes/{replay.json()['id']}"

    other = httpx.post(f"{stack.api_url}/v1/tunes", json={**body, "n_epochs": 2}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(http.get("/v1/tunes").json()["data"]) == 1


def test_a_retried_upload_with_a_new_multipart_boundary_is_replayed(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    content = HUATUO.read_bytes()[:20000].rsplit(b"\n", 1)[0] + b"\n"

    def upload() -> httpx.Response:
        # httpx picks a fresh random boundary for every request, as every HTTP client does.
        return http.post(
            "/v1/datasets",
            files={"file": ("h.jsonl", content)},
            data={"preset": "huatuo", "seed": "4"},
            headers={"Idempotency-Key": "upload-1"},
        )

    first, second = upload(), upload()
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert len(http.get("/v1/datasets").json()["data"]) == 1


def test_keys_are_scoped_to_the_project_and_errors_are_not_stored(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    first, second = client(stack.api_url, make_key()), client(stack.api_url, make_key())
    headers = {"Idempotency-Key": "same-key"}
    endpoint = {"url": "https://example.com/hooks"}
    a = first.post("/v1/webhook-endpoints", json=endpoint, headers=headers)
    b = second.post("/v1/webhook-endpoints", json=endpoint, headers=headers)
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    # The stored answer holds the endpoint's secret: it must not sit in the database in clear.
    with session_scope() as session:
        stored = session.scalars(select(IdempotencyRecord.response_body)).all()
    assert stored and not any(a.json()["secret"].encode() in body for body in stored if body)

    # A 404 is stored (the request ran); fixing the request needs a new key, as with Stripe.
    missing = first.post(
        "/v1/tunes",
        json={"dataset_id": "ds_nope", "base_model": "gpt-4o-mini"},
        headers={"Idempotency-Key": "k2"},
    )
    again = first.post(
        "/v1/tunes",
        json={"dataset_id": "ds_nope", "base_model": "gpt-4o-mini"},
        headers={"Idempotency-Key": "k2"},
    )
    assert missing.status_code == again.status_code == 404 and again.headers["idempotent-replayed"] == "true"

    too_long = first.post("/v1/webhook-endpoints", json=endpoint, headers={"Idempotency-Key": "x" * 300})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_idempotency_key"
