"""OpenAI's signed `fine_tuning.job.*` webhooks make Tuneforge poll the job at once."""

from __future__ import annotations

import os
import time

import httpx
import orjson

from shared.db import session_scope
from shared.models import Tune
from shared.webhooks import signing
from tests.e2e.story import client, ready_dataset, start_tune, wait_tune
from tests.support.procs import wait_for

URL_PATH = "/v1/provider-webhooks/openai"


def _event(job_id: str) -> bytes:
    body = {
        "object": "event",
        "id": "evt_test",
        "type": "fine_tuning.job.succeeded",
        "created_at": int(time.time()),
    }
    return orjson.dumps({**body, "data": {"id": job_id}})


def test_a_signed_provider_webhook_nudges_the_tune(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    tune = start_tune(http, ready_dataset(http)["id"], "0.1")
    job_id = wait_for(
        lambda: http.get(f"/v1/tunes/{tune['id']}").json()["provider_job_id"], 30, what="job id"
    )

    secret = os.environ["TUNEFORGE_OPENAI_WEBHOOK_SECRET"]
    body = _event(job_id)
    signed = httpx.post(
        f"{stack.api_url}{URL_PATH}", content=body, headers=signing.headers([secret], "wh_1", body)
    )
    assert signed.status_code == 200 and signed.json() == {"received": True, "tune_id": tune["id"]}
    with session_scope() as session:
        row = session.get(Tune, tune["id"])
        assert row is not None and row.next_poll_at is not None
    assert wait_tune(http, tune["id"])["status"] == "succeeded"

    unknown = _event("ftjob-unknown")
    answer = httpx.post(
        f"{stack.api_url}{URL_PATH}", content=unknown, headers=signing.headers([secret], "wh_2", unknown)
    )
    assert answer.status_code == 200 and answer.json()["tune_id"] is None


def test_unsigned_or_forged_provider_webhooks_are_refused(stack) -> None:  # type: ignore[no-untyped-def]
    body = _event("ftjob-x")
    other = "whsec_" + "A" * 43 + "="
    forged = httpx.post(
        f"{stack.api_url}{URL_PATH}", content=body, headers=signing.headers([other], "wh_3", body)
    )
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"
    bare = httpx.post(f"{stack.api_url}{URL_PATH}", content=body)
    assert bare.status_code == 400
    secret = os.environ["TUNEFORGE_OPENAI_WEBHOOK_SECRET"]
    stale = signing.headers([secret], "wh_4", body, timestamp=int(time.time()) - 3600)
    assert httpx.post(f"{stack.api_url}{URL_PATH}", content=body, headers=stale).status_code == 400
