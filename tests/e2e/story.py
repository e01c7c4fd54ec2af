"""The first story (DESIGN.md §1) as a client would run it; shared by the Postgres/Redis test
and the embedded-default test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
from openai import OpenAI
from standardwebhooks import Webhook

from tests.support.paths import HUATUO
from tests.support.procs import wait_for
from tests.support.receiver import Receiver

SYSTEM_PROMPT = "你是一名专业的医生，请根据患者的问题给出建议。"


def client(api_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def upload_dataset(http: httpx.Client, path: Path, **form: Any) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = http.post("/v1/datasets", files={"file": (path.name, handle)}, data=form)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/datasets/{response.json()['id']}"
    return response.json()


def wait_dataset(http: httpx.Client, dataset_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = http.get(f"/v1/datasets/{dataset_id}").json()
        return body if body["status"] in ("ready", "failed") else None

    return wait_for(done, timeout, what=f"dataset {dataset_id} to finish")


def wait_tune(http: httpx.Client, tune_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = http.get(f"/v1/tunes/{tune_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"tune {tune_id} to finish")


def ready_dataset(http: httpx.Client, size: int = 12, **form: Any) -> dict[str, Any]:
    """A small Huatuo sample, prepared."""
    dataset = wait_dataset(
        http, upload_dataset(http, HUATUO, preset="huatuo", sample_size=str(size), **form)["id"]
    )
    assert dataset["status"] == "ready", dataset
    return dataset


def start_tune(http: httpx.Client, dataset_id: str, time_scale: str) -> dict[str, Any]:
    """A gpt-4o-mini tune on the sandbox, its simulated clock at `time_scale` wall seconds per
    simulated second (slower than the tests' default, to catch it running)."""
    response = http.post(
        "/v1/tunes",
        json={
            "dataset_id": dataset_id,
            "base_model": "gpt-4o-mini",
            "metadata": {"sandbox_time_scale": time_scale},
        },
    )
    assert response.status_code == 202, response.text
    return response.json()


def run_first_story(api_url: str, key: str, receiver: Receiver) -> str:
    """Runs the story; returns the webhook secret it was given."""
    http = client(api_url, key)
    created = http.post("/v1/webhook-endpoints", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    receiver.expect_secrets(secret)

    dataset = upload_dataset(
        http, HUATUO, preset="huatuo", sample_size="100", seed="7", system_prompt=SYSTEM_PROMPT
    )
    assert dataset["status"] in ("pending", "processing")
    dataset = wait_dataset(http, dataset["id"])
    assert dataset["status"] == "ready", dataset
    report = dataset["report"]
    assert report["examples"] == 100 and report["train_examples"] == 100
    assert report["rows_read"] == 2000
    assert report["quote"]["billed_tokens"] > 0 and report["quote"]["cost_usd"] > 0
    assert report["tokens"]["min"] <= report["tokens"]["p50"] <= report["tokens"]["max"]

    train_lines = http.get(
        f"/v1/datasets/{dataset['id']}/content", params={"split": "train"}
    ).text.splitlines()
    assert len(train_lines) == 100
    example = orjson.loads(train_lines[0])["messages"]
    assert [m["role"] for m in example] == ["system", "user", "assistant"]
    assert example[0]["content"] == SYSTEM_PROMPT
    question, answer = example[1]["content"], example[2]["content"]

    tune = http.post(
        "/v1/tunes",
        json={"dataset_id": dataset["id"], "base_model": "gpt-4o-mini", "n_epochs": 2, "suffix": "medqa"},
    )
    assert tune.status_code == 202, tune.text
    assert tune.headers["location"] == f"/v1/tunes/{tune.json()['id']}"
    tune = wait_tune(http, tune.json()["id"])
    assert tune["status"] == "succeeded", tune
    model = tune["fine_tuned_model"]
    assert model.startswith("ft:gpt-4o-mini-2024-07-18:") and ":medqa:" in model

    metrics = http.get(f"/v1/tunes/{tune['id']}/metrics").json()["data"]
    assert len(metrics) >= 2 and metrics[0]["train_loss"] > metrics[-1]["train_loss"]
    events = http.get(f"/v1/tunes/{tune['id']}/events").json()["data"]
    assert any(e["source"] == "provider" for e in events)
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses[-2:] == ["running", "succeeded"]
    checkpoints = http.get(f"/v1/tunes/{tune['id']}/checkpoints").json()["data"]
    assert checkpoints and all(
        c["fine_tuned_model_checkpoint"].startswith(model + ":ckpt-step-") for c in checkpoints
    )
    # Points merge the metrics events with the result file (only it has `train_accuracy`).
    steps = [p["step"] for p in metrics]
    assert steps == sorted(set(steps)) and all("train_accuracy" in p for p in metrics)

    def announced() -> list[dict[str, Any]] | None:
        types = [json.loads(r.body)["type"] for r in receiver.requests]
        return (
            receiver.requests if {"tune.running", "tune.succeeded", "dataset.ready"} <= set(types) else None
        )

    wait_for(announced, 30, what="webhooks for dataset.ready, tune.running and tune.succeeded")
    verifier = Webhook(secret)
    for request in receiver.requests:
        payload = verifier.verify(request.body, request.headers)
        assert payload["id"] == request.headers["webhook-id"]
    by_type = {json.loads(r.body)["type"]: json.loads(r.body) for r in receiver.requests}
    assert by_type["tune.succeeded"]["data"]["fine_tuned_model"] == model
    assert by_type["tune.running"]["data"]["id"] == tune["id"]

    sdk = OpenAI(base_url=f"{api_url}/v1", api_key=key, max_retries=0)
    for name in (model, tune["id"]):
        reply = sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": question}])
        assert reply.choices[0].message.content == answer
        assert reply.usage is not None and reply.usage.total_tokens > 0
    chunks = list(
        sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices]) > 1
    assert streamed == answer
    assert chunks[-1].usage is not None
    base = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    assert base.choices[0].message.content and base.choices[0].message.content != answer
    listed = [m.id for m in sdk.models.list()]
    assert model in listed
    return secret
