"""Files, Models and the HTTP conventions every response follows (auth, request ids, error envelope)."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.sandbox.harness import AUTH, Sandbox, TrainedJob, huatuo_rows, jsonl, to_example, upload, wait_for

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def test_file_upload_list_content_delete(client: OpenAI) -> None:
    content = jsonl([to_example(r) for r in huatuo_rows(10)])
    first = client.files.create(file=("a.jsonl", content), purpose="fine-tune")
    second = client.files.create(file=("b.jsonl", b'{"x": 1}\n'), purpose="fine-tune")
    assert first.id.startswith("file-") and first.status == "processed"
    assert first.bytes == len(content) and first.filename == "a.jsonl" and first.purpose == "fine-tune"
    assert client.files.retrieve(first.id).created_at == first.created_at
    assert client.files.content(first.id).read() == content
    newest = client.files.list(purpose="fine-tune", limit=1)
    assert [f.id for f in newest.data] == [second.id] and newest.has_more
    older = client.files.list(purpose="fine-tune", limit=1, after=second.id)
    assert [f.id for f in older.data] == [first.id]
    ascending = [f.id for f in client.files.list(purpose="fine-tune", order="asc")]
    assert ascending.index(first.id) < ascending.index(second.id)
    deleted = client.files.delete(second.id)
    assert deleted.deleted and deleted.id == second.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(second.id)


def test_fine_tune_uploads_must_be_jsonl(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("train.csv", b"a,b\n"), purpose="fine-tune")
    assert err.value.param == "file"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}"), purpose="not-a-purpose")  # type: ignore[arg-type]


def test_models_list_retrieve_and_delete(client: OpenAI, trained: TrainedJob) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "gpt-3.5-turbo-0125"} <= set(models)
    ft = models[trained.job.fine_tuned_model]
    assert ft.owned_by == "org-tuneforge-sandbox" and ft.created == trained.job.finished_at
    assert ft.shutdown_date == "2027-01-14"
    assert models["gpt-3.5-turbo-0125"].shutdown_date == "2026-10-23"
    assert client.models.retrieve(trained.job.fine_tuned_model).id == trained.job.fine_tuned_model
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("gpt-4o-mini-2024-07-18")


def test_deleted_fine_tune_disappears(client: OpenAI) -> None:
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(10, offset=100)]))
    job = wait_for(client, client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id)
    name = job.fine_tuned_model
    assert client.models.delete(name).deleted is True
    assert name not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found"


def test_missing_bearer_is_401_with_envelope(sandbox: Sandbox) -> None:
    response = httpx.get(f"{sandbox.base_url}/models")
    assert response.status_code == 401
    assert set(response.json()["error"]) == ENVELOPE_KEYS
    assert response.headers["x-request-id"].startswith("req_")
    assert httpx.get(f"{sandbox.root_url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/files/file-nope", {}, 404),
        ("GET", "/fine_tuning/jobs/ftjob-nope/events", {}, 404),
        ("GET", "/models/ft:gpt-4o-mini-2024-07-18:x::nope1234", {}, 404),
        ("GET", "/no/such/route", {}, 404),
        ("GET", "/fine_tuning/jobs?limit=0", {}, 400),
        (
            "POST",
            "/fine_tuning/jobs",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("POST", "/fine_tuning/jobs", {"json": {"model": "gpt-4o-mini"}}, 400),
        ("POST", "/chat/completions", {"json": {"model": "gpt-4o-mini", "messages": []}}, 400),
    ],
)
def test_errors_always_use_the_openai_envelope(
    sandbox: Sandbox, method: str, path: str, kwargs: dict, status: int
) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response = httpx.request(method, sandbox.base_url + path, headers=headers, **kwargs)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS
    assert body["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"].startswith("req_")
