"""A real sandbox server (uvicorn on a free port, in a thread) and an official openai client for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.sandbox.harness import (
    TIME_SCALE,
    Sandbox,
    TrainedJob,
    huatuo_rows,
    jsonl,
    serve,
    to_example,
    upload,
    wait_for,
)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    from sandbox.app import create_app

    with serve(create_app(time_scale=TIME_SCALE)) as running:
        yield running


@pytest.fixture(scope="session")
def client(sandbox: Sandbox) -> OpenAI:
    # max_retries=0: a retried request would hide exactly the errors these tests look for.
    return OpenAI(api_key="sk-test", base_url=sandbox.base_url, max_retries=0, timeout=20)


@pytest.fixture(scope="session")
def trained(client: OpenAI) -> TrainedJob:
    """One supervised job on 30 Huatuo-style rows, run to success; shared by the read-only tests."""
    rows = huatuo_rows(30)
    content = jsonl([to_example(r) for r in rows])
    file_id = upload(client, content)
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, suffix="sbx", seed=42, metadata={"suite": "sandbox"}
    )
    assert created.status == "validating_files"
    job = wait_for(client, created.id)
    # Polling may miss the 40 ms of validating/queued; the create response is the first status seen.
    seen = [created.status] + [s for s in job.seen_statuses if s != created.status]
    return TrainedJob(job, rows, content, seen)
