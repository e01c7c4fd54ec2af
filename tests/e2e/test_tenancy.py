"""Key A never sees project B's objects: every foreign id answers 404 like a missing one."""

from __future__ import annotations

import httpx

from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.paths import HUATUO


def test_other_projects_objects_are_invisible(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    owner, stranger = client(stack.api_url, make_key()), client(stack.api_url, make_key())
    dataset = wait_dataset(
        owner, upload_dataset(owner, HUATUO, preset="huatuo", sample_size="20", seed="1")["id"]
    )
    assert dataset["status"] == "ready"
    tune = owner.post(
        "/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-4o-mini", "n_epochs": 1}
    )
    assert tune.status_code == 202, tune.text
    tune_id = tune.json()["id"]

    for path in (
        f"/v1/datasets/{dataset['id']}",
        f"/v1/datasets/{dataset['id']}/content",
        f"/v1/tunes/{tune_id}",
        f"/v1/tunes/{tune_id}/events",
        f"/v1/tunes/{tune_id}/metrics",
    ):
        response = stranger.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] in ("dataset_not_found", "tune_not_found")
    assert stranger.post(f"/v1/tunes/{tune_id}/cancel").status_code == 404
    foreign_tune = stranger.post("/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-4o-mini"})
    assert foreign_tune.status_code == 404
    assert (
        stranger.post("/v1/quotes", json={"dataset_id": dataset["id"], "model": "gpt-4o-mini"}).status_code
        == 404
    )
    assert stranger.get("/v1/datasets").json()["data"] == []
    assert stranger.get("/v1/tunes").json()["data"] == []
    chat = stranger.post(
        "/v1/chat/completions", json={"model": tune_id, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"

    # The owner still sees and controls its own objects.
    assert [d["id"] for d in owner.get("/v1/datasets").json()["data"]] == [dataset["id"]]
    assert owner.post(f"/v1/tunes/{tune_id}/cancel").status_code in (202, 409)


def test_requests_without_a_valid_key_are_refused(stack) -> None:  # type: ignore[no-untyped-def]
    for headers in ({}, {"Authorization": "Bearer tf_not-a-key"}):
        response = httpx.get(f"{stack.api_url}/v1/datasets", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
