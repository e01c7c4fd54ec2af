"""Evals through the real stack: base vs a model tuned on the Huatuo-style sample's train split, over
its validation split (the acceptance check), the item table and CSV, `eval.completed`, the judge,
validation codes and tenancy.

About the sandbox (sandbox/chat.py): a tuned model answers with the training answer of the most
similar training question, a base model with a fixed English disclaimer plus the question's first
40 characters. The validation split shares no question with the train split (the sample is
deduplicated on normalised questions and the split is leak-safe), so the tuned model's answers are
other patients' answers: it wins on the references because those are Chinese medical answers in
the same register, not because it answers the question. The test asserts exactly that much."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import httpx
import pytest

from shared import auth
from shared.db import session_scope
from tests.e2e.story import client, upload_dataset, wait_dataset, wait_tune
from tests.support.paths import HUATUO
from tests.support.procs import wait_for

BASE = "gpt-4o-mini"


def wait_eval(http: httpx.Client, eval_id: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = http.get(f"/v1/evals/{eval_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(done, timeout, interval=0.5, what=f"eval {eval_id} to finish")


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error.get("param")


@pytest.fixture(scope="module")
def tuned(stack) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """One project with the whole sample prepared (10% held out) and a model tuned on its train split."""
    with session_scope() as session:
        project = auth.get_or_create_project(session, f"evals-{uuid.uuid4().hex[:10]}")
        key = auth.create_key(session, project=project)
    http = client(stack.api_url, key)
    upload = upload_dataset(http, HUATUO, preset="huatuo", validation_fraction="0.1", seed="5")
    dataset = wait_dataset(http, upload["id"], timeout=120)
    assert dataset["status"] == "ready", dataset
    assert dataset["report"]["validation_examples"] >= 150
    tune = http.post("/v1/tunes", json={"dataset_id": dataset["id"], "base_model": BASE, "n_epochs": 1})
    assert tune.status_code == 202, tune.text
    done = wait_tune(http, tune.json()["id"], timeout=180)
    assert done["status"] == "succeeded", done
    return {"key": key, "dataset": dataset, "tune": done}


def test_tuned_beats_base_on_held_out_questions_with_separate_intervals(stack, tuned, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, tuned["key"])
    hooked = http.post("/v1/webhook-endpoints", json={"url": receiver.url, "events": ["eval.completed"]})
    receiver.expect_secrets(hooked.json()["secret"])
    created = http.post(
        "/v1/evals",
        json={
            "dataset_id": tuned["dataset"]["id"],
            "models": [BASE, tuned["tune"]["id"]],
            "max_items": 120,
            "seed": 3,
            "concurrency": 4,
        },
    )
    assert created.status_code == 202, created.text
    assert created.headers["location"] == f"/v1/evals/{created.json()['id']}"
    assert created.json()["status"] == "queued" and created.json()["id"].startswith("eval_")
    body = wait_eval(http, created.json()["id"])
    assert body["status"] == "completed", body
    assert body["language"] == "zh" and body["items_total"] == body["items_done"] == 120
    tune_id, model = tuned["tune"]["id"], tuned["tune"]["fine_tuned_model"]
    assert [m["upstream_model"] for m in body["resolved_models"]] == ["gpt-4o-mini-2024-07-18", model]

    base, tuned_metrics = body["metrics"][BASE], body["metrics"][tune_id]
    for tokenization in ("char", "word"):  # characters and jieba words, both reported
        for metric in ("rouge_l", "bleu_4"):
            ours, theirs = tuned_metrics[tokenization][metric], base[tokenization][metric]
            assert theirs["ci_high"] < ours["ci_low"], (tokenization, metric, ours, theirs)
        for name, score in tuned_metrics[tokenization].items():
            assert 0 <= score["ci_low"] <= score["value"] <= score["ci_high"] <= 100, name
    names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "gleu", "rouge_1", "rouge_2", "rouge_l")
    assert set(tuned_metrics["char"]) == {*names, "distinct_1", "distinct_2"}
    # The base model's fixed disclaimer repeats itself: far fewer distinct bigrams.
    assert base["char"]["distinct_2"]["value"] < tuned_metrics["char"]["distinct_2"]["value"]
    assert base["errors"] == tuned_metrics["errors"] == 0
    # No held-out reference is word for word a training answer: the lead is not leaked data.
    assert base["exact_match"]["value"] == tuned_metrics["exact_match"]["value"] == 0

    items = body["items"]
    assert [i["position"] for i in items] == list(range(120))
    first = items[0]
    assert [o["model"] for o in first["outputs"]] == [BASE, tune_id]
    assert first["outputs"][0]["answer"].startswith("I am a general assistant")
    assert first["outputs"][1]["scores"]["char"]["rouge_l"] >= 0

    exported = http.get(f"/v1/evals/{body['id']}", params={"format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 120
    assert rows[0]["question"] == first["question"] and rows[0]["reference"] == first["reference"]
    assert rows[0][f"{BASE} answer"] == first["outputs"][0]["answer"]
    assert rows[0][f"{tune_id} answer"] == first["outputs"][1]["answer"]
    assert float(rows[0][f"{tune_id} word.rouge_l"]) == pytest.approx(
        first["outputs"][1]["scores"]["word"]["rouge_l"], abs=1e-4
    )

    hooks = wait_for(lambda: receiver.requests, 30, what="eval.completed")
    event = json.loads(hooks[0].body)
    assert event["type"] == "eval.completed" and event["data"]["id"] == body["id"]
    assert event["data"]["metrics"][tune_id]["char"]["rouge_l"] == tuned_metrics["char"]["rouge_l"]


def test_same_seed_same_items_and_intervals(stack, tuned) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, tuned["key"])
    request = {
        "dataset_id": tuned["dataset"]["id"],
        "models": [BASE, "gpt-4.1-mini"],
        "max_items": 15,
        "seed": 9,
    }
    first, second = (wait_eval(http, http.post("/v1/evals", json=request).json()["id"]) for _ in range(2))
    assert first["status"] == second["status"] == "completed"
    assert [i["question"] for i in first["items"]] == [i["question"] for i in second["items"]]
    assert first["metrics"] == second["metrics"]
    other = wait_eval(http, http.post("/v1/evals", json={**request, "seed": 10}).json()["id"])
    assert [i["question"] for i in other["items"]] != [i["question"] for i in first["items"]]


def test_bad_requests_answer_with_codes(stack, tuned, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, tuned["key"])
    dataset_id = tuned["dataset"]["id"]
    two = [BASE, "gpt-4.1-mini"]
    cases = [
        ({"dataset_id": dataset_id, "models": [BASE]}, (400, "invalid_request", "models")),
        ({"dataset_id": dataset_id, "models": [BASE, BASE]}, (400, "invalid_models", "models")),
        ({"dataset_id": dataset_id, "models": [BASE, "nope"]}, (404, "model_not_found", "models[1]")),
        ({"dataset_id": "ds_missing", "models": two}, (404, "dataset_not_found", "dataset_id")),
        ({"dataset_id": dataset_id, "models": two, "max_items": 0}, (400, "invalid_request", "max_items")),
        (
            {"dataset_id": dataset_id, "models": two, "judge": {"model": "nope"}},
            (404, "model_not_found", "judge.model"),
        ),
    ]
    for body, expected in cases:
        assert error_of(http.post("/v1/evals", json=body)) == expected, body
    assert error_of(http.get("/v1/evals/eval_missing"))[:2] == (404, "eval_not_found")

    # A dataset without a validation split; and another project's eval is not found.
    other = client(stack.api_url, make_key())
    no_split = wait_dataset(other, upload_dataset(other, HUATUO, preset="huatuo", sample_size="20")["id"])
    response = other.post("/v1/evals", json={"dataset_id": no_split["id"], "models": [BASE, "gpt-4.1-mini"]})
    assert error_of(response) == (400, "empty_split", "split")
    mine = http.post(
        "/v1/evals", json={"dataset_id": dataset_id, "models": [BASE, "gpt-4.1-mini"], "max_items": 2}
    )
    assert error_of(other.get(f"/v1/evals/{mine.json()['id']}"))[:2] == (404, "eval_not_found")
    assert mine.json()["id"] not in [e["id"] for e in other.get("/v1/evals").json()["data"]]
    assert mine.json()["id"] in [e["id"] for e in http.get("/v1/evals").json()["data"]]


def run_eval(http: httpx.Client, dataset_id: str, models: list[str], **extra: Any) -> dict[str, Any]:
    created = http.post("/v1/evals", json={"dataset_id": dataset_id, "models": models, **extra})
    assert created.status_code == 202, created.text
    body = wait_eval(http, created.json()["id"])
    assert body["status"] == "completed", body
    return body


def test_a_position_swapped_judge_prefers_the_tuned_model(stack, tuned) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, tuned["key"])
    tune_id = tuned["tune"]["id"]
    body = run_eval(
        http, tuned["dataset"]["id"], [BASE, tune_id], max_items=20, seed=2, judge={"model": "gpt-4.1-mini"}
    )
    (pair,) = body["judge"]["pairs"]
    assert (pair["baseline"], pair["model"]) == (BASE, tune_id)
    assert pair["win"] + pair["tie"] + pair["loss"] == 20 and pair["invalid"] == 0
    # The sandbox judge prefers the answer closer to the reference, whichever side it is on.
    assert pair["win"] > pair["loss"] and pair["win_rate"] > 50
    verdicts = body["items"][0]["judge"]
    assert [v["slot"] for v in verdicts] == ["judge:0:1:ab", "judge:0:1:ba"]
    assert {v["verdict"]["verdict"] for v in verdicts} <= {"A", "B", "tie"}


def test_promotion_needs_an_eval_the_new_model_wins(stack, tuned) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, tuned["key"])
    tune_id, dataset_id = tuned["tune"]["id"], tuned["dataset"]["id"]
    assert http.put("/v1/aliases/medqa-prod", json={"model": BASE}).status_code == 200
    body = run_eval(http, dataset_id, [BASE, tune_id], max_items=40, seed=1)
    lead = (
        body["metrics"][tune_id]["char"]["rouge_l"]["value"]
        - body["metrics"][BASE]["char"]["rouge_l"]["value"]
    )
    assert lead > 1

    def promote(model: str, **gate: Any) -> httpx.Response:
        return http.put(
            "/v1/aliases/medqa-prod", json={"model": model, "require_eval": {"eval_id": body["id"], **gate}}
        )

    refused = promote(tune_id, metric="char.rouge_l", min_margin=lead + 1)
    assert error_of(refused) == (409, "eval_gate_failed", "require_eval")
    numbers = refused.json()["error"]["gate"]
    assert numbers["candidate"]["model"] == tune_id and numbers["current"]["model"] == BASE
    assert numbers["margin"] == pytest.approx(lead) and f"{lead:+.2f}" in refused.json()["error"]["message"]
    assert http.get("/v1/aliases/medqa-prod").json()["version"] == 1  # unchanged

    assert error_of(promote(tune_id, metric="perplexity"))[:2] == (400, "invalid_metric")
    other = run_eval(http, dataset_id, [BASE, "gpt-4.1-mini"], max_items=3)
    missing = http.put(
        "/v1/aliases/medqa-prod", json={"model": tune_id, "require_eval": {"eval_id": other["id"]}}
    )
    assert error_of(missing) == (400, "eval_missing_model", "require_eval.eval_id")

    promoted = promote(tune_id, metric="rouge_l", min_margin=1)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["targets"][0]["model"] == tune_id
    # Back to the base model: it loses the same eval, on characters and on jieba words.
    for metric in ("rouge_l", "word.bleu_4"):
        back = promote(BASE, metric=metric)
        assert error_of(back) == (409, "eval_gate_failed", "require_eval")
        assert back.json()["error"]["gate"]["margin"] < 0
    # The fine-tuned name is the same model as the tune id for the gate.
    assert http.put("/v1/aliases/medqa-prod", json={"model": BASE}).status_code == 200
    by_name = promote(tuned["tune"]["fine_tuned_model"], metric="bleu_4")
    assert by_name.status_code == 200, by_name.text


def test_a_refused_prompt_is_recorded_and_a_flaky_provider_retried(stack, tuned) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, tuned["key"])
    nano = "gpt-4.1-nano"
    rules = [
        # Refused for good: stored as that output's error, the item left out of the comparison.
        {"action": "status", "status": 400, "code": "context_length_exceeded", "model": nano, "times": 1},
        # Two 503s then success: the SDK's retries absorb them.
        {"action": "status", "status": 503, "retry_after_ms": 1, "model": nano, "times": 2},
    ]
    with httpx.Client(base_url=stack.sandbox_url) as sandbox:
        added = sandbox.post("/sandbox/faults", json=rules).json()["data"]
        try:
            body = run_eval(http, tuned["dataset"]["id"], [BASE, nano], max_items=6, concurrency=1)
            fired = sandbox.get("/sandbox/faults").json()["data"]
        finally:
            for rule in added:
                sandbox.delete(f"/sandbox/faults/{rule['id']}")
    assert [r["fired"] for r in fired if r["id"] in {a["id"] for a in added}] == [1, 2]
    assert body["metrics"][nano]["errors"] == 1 and body["metrics"][BASE]["errors"] == 0
    assert body["metrics"][BASE]["items_scored"] == body["metrics"][nano]["items_scored"] == 5
    failed = [o for item in body["items"] for o in item["outputs"] if o["error"]]
    assert [o["error"]["code"] for o in failed] == ["context_length_exceeded"] and failed[0]["scores"] is None
    rows = list(
        csv.DictReader(io.StringIO(http.get(f"/v1/evals/{body['id']}", params={"format": "csv"}).text))
    )
    assert [r[f"{nano} error"] for r in rows].count("context_length_exceeded") == 1
