"""SIGKILL the worker in the middle of an eval: the outputs stored before the kill are kept and not
asked for again, the call the kill cut short is made once more, and the eval completes with every
item (the sweep re-drives it from Postgres; Celery's own redelivery waits for the visibility
timeout)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from shared.models import EvalOutput
from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.faults.support import FaultStack, kill_during
from tests.support.paths import HUATUO
from tests.support.procs import wait_for

HOLD_S = 2.5
ITEMS, MODELS = 12, ["gpt-4o-mini", "gpt-4.1-mini"]
DONE_BEFORE_KILL = 9
CHAT = "POST /v1/chat/completions"


def chat_requests(stack: FaultStack) -> int:
    with stack.sandbox() as http:
        return int(http.get("/sandbox/stats").json()["requests"].get(CHAT, 0))


def outputs(stack: FaultStack, eval_id: str) -> dict[tuple[int, str], Any]:
    with stack.db() as session:
        rows = session.scalars(select(EvalOutput).where(EvalOutput.eval_id == eval_id))
        return {(row.position, row.slot): row.created_at for row in rows}


def test_an_eval_survives_a_worker_kill_without_redoing_finished_items(stack: FaultStack) -> None:
    http: httpx.Client = client(stack.api_url, stack.new_key())
    upload = upload_dataset(
        http, HUATUO, preset="huatuo", sample_size="40", validation_fraction="0.5", seed="21"
    )
    dataset = wait_dataset(http, upload["id"])
    assert dataset["status"] == "ready", dataset
    # One call at a time, in item order: the held call is the tenth, after nine stored outputs.
    (held,) = stack.add_faults(
        {
            "action": "delay",
            "delay_s": HOLD_S,
            "method": "POST",
            "path": "/v1/chat/completions",
            "skip": DONE_BEFORE_KILL,
        }
    )
    before = chat_requests(stack)
    created = http.post(
        "/v1/evals",
        json={"dataset_id": dataset["id"], "models": MODELS, "max_items": ITEMS, "seed": 4, "concurrency": 1},
    )
    assert created.status_code == 202, created.text
    eval_id = created.json()["id"]

    kill_during(stack, held, f"eval:{eval_id}")
    kept = outputs(stack, eval_id)
    assert len(kept) == DONE_BEFORE_KILL, sorted(kept)

    def finished() -> dict[str, Any] | None:
        body = http.get(f"/v1/evals/{eval_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    body = wait_for(finished, 90, interval=0.5, what="the eval to finish after the kill")
    assert body["status"] == "completed", body
    assert body["items_done"] == ITEMS and all(a["answer"] for i in body["items"] for a in i["outputs"])
    after = outputs(stack, eval_id)
    assert len(after) == ITEMS * len(MODELS)
    # Stored before the kill, untouched after it.
    assert {key: after[key] for key in kept} == kept
    # Every call once, plus the one the kill cut short.
    assert chat_requests(stack) - before == ITEMS * len(MODELS) + 1
    assert set(body["metrics"]) == set(MODELS)
    wait_for(lambda: not stack.attempts(f"eval:{eval_id}"), 30, what="the eval's attempt count to clear")
