"""Submission is idempotent at the provider: a job made by an attempt whose response was lost is
found by the tune id in its metadata and adopted, never created twice."""

from __future__ import annotations

import io

from openai import OpenAI

from shared.db import session_scope
from shared.ids import new_id
from shared.models import Tune
from shared.tunes import jobs as tune_jobs
from tests.e2e.rows import insert_uploading_tune
from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.paths import HUATUO


def test_a_job_created_earlier_is_adopted_not_duplicated(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = wait_dataset(http, upload_dataset(http, HUATUO, preset="huatuo", sample_size="12")["id"])
    training = http.get(f"/v1/datasets/{dataset['id']}/content").content
    sandbox = OpenAI(base_url=f"{stack.sandbox_url}/v1", api_key="sk-test", max_retries=0)
    file_id = sandbox.files.create(file=("train.jsonl", io.BytesIO(training)), purpose="fine-tune").id

    # The state a worker leaves behind when the create call went through but its answer was lost:
    # the upload recorded, no job id. The row is written directly so no worker races this test.
    tune_id = new_id("tune")
    insert_uploading_tune(tune_id, dataset["id"], provider_file_id=file_id)
    earlier = sandbox.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={tune_jobs.METADATA_KEY: tune_id}
    )

    with session_scope() as session:
        tune_jobs.create_job(session, tune_id)
    with session_scope() as session:
        tune = session.get(Tune, tune_id)
        assert tune is not None and tune.provider_job_id == earlier.id
    matching = sandbox.fine_tuning.jobs.list(metadata={tune_jobs.METADATA_KEY: tune_id}).data
    assert [job.id for job in matching] == [earlier.id]


def test_a_file_uploaded_earlier_is_adopted_not_uploaded_again(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = wait_dataset(http, upload_dataset(http, HUATUO, preset="huatuo", sample_size="12")["id"])
    training = http.get(f"/v1/datasets/{dataset['id']}/content").content
    sandbox = OpenAI(base_url=f"{stack.sandbox_url}/v1", api_key="sk-test", max_retries=0)
    tune_id = new_id("tune")
    # The upload went through but its response was lost: the file exists, the tune has no id.
    earlier = sandbox.files.create(file=(f"{tune_id}-train.jsonl", io.BytesIO(training)), purpose="fine-tune")
    insert_uploading_tune(tune_id, dataset["id"])
    with session_scope() as session:
        assert tune_jobs.upload_files(session, tune_id)
    with session_scope() as session:
        tune = session.get(Tune, tune_id)
        assert tune is not None and tune.provider_file_id == earlier.id
    named = [
        f for f in sandbox.files.list(purpose="fine-tune").data if f.filename == f"{tune_id}-train.jsonl"
    ]
    assert [f.id for f in named] == [earlier.id]
