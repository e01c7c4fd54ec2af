"""Fine-tuning jobs through the official SDK: lifecycle, events, checkpoints, results, failures."""

from __future__ import annotations

import json
import re
import time

import httpx
import openai
import pytest
import tiktoken
from openai import OpenAI

from tests.sandbox.harness import Sandbox, TrainedJob, huatuo_rows, jsonl, to_example, upload, wait_for

FT_NAME = re.compile(r"^ft:gpt-4o-mini-2024-07-18:tuneforge-sandbox:sbx:[A-Za-z0-9]{8}$")
ORDER = ["validating_files", "queued", "running", "succeeded"]


def cookbook_tokens(messages: list[dict[str, str]]) -> int:
    enc = tiktoken.get_encoding("o200k_base")
    return sum(3 + sum(len(enc.encode(v)) for v in m.values()) for m in messages) + 3


def test_job_succeeds_with_resolved_hyperparameters(trained: TrainedJob) -> None:
    job = trained.job
    assert job.status == "succeeded"
    assert trained.seen_statuses[0] == "validating_files"
    assert trained.seen_statuses[-1] == "succeeded"
    assert [s for s in ORDER if s in trained.seen_statuses] == trained.seen_statuses  # never goes backwards
    assert job.model == "gpt-4o-mini-2024-07-18"
    assert FT_NAME.match(job.fine_tuned_model), job.fine_tuned_model
    assert job.error is None and job.estimated_finish is None
    assert job.finished_at is not None and job.finished_at >= job.created_at
    # 30 examples: cookbook default epochs = 100 // 30 = 3; small data trains one example per step.
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 1
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.n_epochs == 3
    assert job.seed == 42 and job.metadata == {"suite": "sandbox"}
    expected = 3 * sum(cookbook_tokens(to_example(r)["messages"]) for r in trained.rows)
    assert job.trained_tokens == expected
    assert len(job.result_files) == 1


def test_events_tell_the_story_with_a_falling_loss(client: OpenAI, trained: TrainedJob) -> None:
    events = list(client.fine_tuning.jobs.list_events(trained.job.id))  # auto-paginates, newest first
    messages = [e.message for e in events]
    assert messages[0] == "Fine tuning job successfully completed"
    assert messages[1] == f"New fine-tuned model created: {trained.job.fine_tuned_model}"
    assert messages[-1] == "Created fine-tuning job"
    assert any(m.startswith("Validating training file: ") for m in messages)
    assert "Fine-tuning job started" in messages
    metrics = [e for e in events if e.type == "metrics"]
    steps = [e.data["step"] for e in metrics]
    assert steps == sorted(steps, reverse=True) and steps[0] == 90 and steps[-1] == 1
    assert all(e.data["total_steps"] == 90 for e in metrics)
    assert metrics[-1].data["train_loss"] > metrics[0].data["train_loss"] * 2
    assert re.match(r"^Step 90/90: training loss=\d+\.\d\d$", metrics[0].message)
    assert metrics[0].data["train_mean_token_accuracy"] > metrics[-1].data["train_mean_token_accuracy"]
    created = [e.created_at for e in events]
    assert created == sorted(created, reverse=True)

    first = client.fine_tuning.jobs.list_events(trained.job.id, limit=5)
    assert len(first.data) == 5 and first.has_more
    second = client.fine_tuning.jobs.list_events(trained.job.id, limit=5, after=first.data[-1].id)
    assert [e.id for e in second.data] == [e.id for e in events[5:10]]
    default = client.fine_tuning.jobs.list_events(trained.job.id)
    assert len(default.data) == 20


def test_checkpoints_keep_the_last_three_epochs(client: OpenAI, trained: TrainedJob) -> None:
    page = client.fine_tuning.jobs.checkpoints.list(trained.job.id)
    assert [c.step_number for c in page.data] == [90, 60, 30]
    assert page.has_more is False
    for ckpt in page.data:
        assert (
            ckpt.fine_tuned_model_checkpoint == f"{trained.job.fine_tuned_model}:ckpt-step-{ckpt.step_number}"
        )
        assert ckpt.fine_tuning_job_id == trained.job.id and ckpt.id.startswith("ftckpt_")
        assert ckpt.metrics.train_loss is not None
    raw = page.model_extra or {}
    assert raw.get("first_id") == page.data[0].id and raw.get("last_id") == page.data[-1].id
    one = client.fine_tuning.jobs.checkpoints.list(trained.job.id, limit=1, after=page.data[0].id)
    assert [c.step_number for c in one.data] == [60] and one.has_more


def test_result_file_is_a_metrics_csv(client: OpenAI, trained: TrainedJob) -> None:
    result = client.files.retrieve(trained.job.result_files[0])
    assert result.purpose == "fine-tune-results" and result.status == "processed"
    lines = client.files.content(result.id).text.strip().splitlines()
    assert lines[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert lines[1].startswith("1,") and lines[-1].startswith("90,")


def test_too_few_examples_fails_after_creation(client: OpenAI) -> None:
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(3)]))
    created = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    assert created.status == "validating_files" and created.error is None
    job = wait_for(client, created.id)
    assert job.status == "failed"
    assert job.fine_tuned_model is None and job.trained_tokens is None and job.result_files == []
    assert job.error.code == "invalid_n_examples" and job.error.param == "training_file"
    assert job.error.message == "Training file has 3 example(s), but must have at least 10 examples"


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("this is not json", "is not valid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "example_missing_assistant_message"),
        (json.dumps({"messages": [{"role": "bot", "content": "hi"}]}), "unrecognized_role"),
        (json.dumps({"prompt": "a", "completion": "b"}), "missing_messages_list"),
    ],
)
def test_bad_lines_fail_with_invalid_training_file(client: OpenAI, bad_line: str, fragment: str) -> None:
    lines = jsonl([to_example(r) for r in huatuo_rows(12)]).decode().splitlines()
    lines.insert(4, bad_line)
    file_id = upload(client, ("\n".join(lines) + "\n").encode())
    job = wait_for(client, client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id)
    assert job.status == "failed" and job.error.code == "invalid_training_file"
    assert "Line 5" in job.error.message and fragment in job.error.message


def test_tool_calls_and_weights_are_valid_training_data(client: OpenAI) -> None:
    tool_example = {
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "assistant", "content": "It is 18C and sunny.", "weight": 1},
        ]
    }
    file_id = upload(client, jsonl([tool_example] * 10))
    job = wait_for(client, client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=file_id).id)
    assert job.status == "succeeded", job.error
    assert job.model == "gpt-4.1-mini-2025-04-14" and job.hyperparameters.n_epochs == 10


def test_create_rejects_unknown_file_and_model(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as missing_file:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-doesnotexist")
    assert missing_file.value.param == "training_file"
    assert missing_file.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(10)]))
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.fine_tuning.jobs.create(model="gpt-99-ultra", training_file=file_id)
    assert bad_model.value.code == "model_not_found" and bad_model.value.param == "model"
    with pytest.raises(openai.NotFoundError) as missing_job:
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert missing_job.value.request_id and missing_job.value.request_id.startswith("req_")


def test_cancel_and_cancel_again(client: OpenAI, sandbox: Sandbox) -> None:
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(20)]))
    # Its own slow clock keeps the job unfinished however loaded the machine is.
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={"sandbox_time_scale": "0.2"}
    )
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(0.8)  # long enough for a validating job to move on: it must stay cancelled
    after = client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "cancelled" and after.fine_tuned_model is None
    # Cancelling a finished job is a 400 the SDK will not retry (409 would be retried).
    response = httpx.post(
        f"{sandbox.base_url}/fine_tuning/jobs/{job.id}/cancel", headers={"Authorization": "Bearer sk-test"}
    )
    assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_pause_freezes_and_resume_requeues(client: OpenAI) -> None:
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(20)]))
    # A slower clock for this job: running lasts seconds, so the pause lands while it runs.
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={"sandbox_time_scale": "0.05"}
    )
    job = wait_for(client, created.id, ("running",))
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    events_at_pause = len(client.fine_tuning.jobs.list_events(job.id, limit=1000).data)
    time.sleep(0.3)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert len(client.fine_tuning.jobs.list_events(job.id, limit=1000).data) == events_at_pause
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_for(client, job.id)
    assert done.status == "succeeded" and done.fine_tuned_model


def test_injected_fault_fails_the_job_while_running(client: OpenAI) -> None:
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(12)]))
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={"sandbox_fail": "1"}
    )
    job = wait_for(client, created.id)
    assert job.status == "failed" and job.error.code == "server_error" and job.error.param is None
    assert job.fine_tuned_model is None
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert any(e.type == "metrics" for e in events) and events[0].level == "error"


def test_list_filters_by_metadata(client: OpenAI, sandbox: Sandbox) -> None:
    file_id = upload(client, jsonl([to_example(r) for r in huatuo_rows(10)]))
    team_a = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={"team": "a"}
    )
    team_b = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={"team": "b"}
    )
    bare = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    only_a = [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "a"})]
    assert only_a == [team_a.id]
    everything = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # auto-paginates 2 at a time
    assert everything.index(bare.id) < everything.index(team_b.id) < everything.index(team_a.id)
    no_metadata = client.fine_tuning.jobs.list(extra_query={"metadata": "null"}).data
    assert bare.id in [j.id for j in no_metadata] and all(not j.metadata for j in no_metadata)
    response = httpx.get(
        f"{sandbox.base_url}/fine_tuning/jobs",
        params={"metadata[team]": "b"},
        headers={"Authorization": "Bearer sk-test"},
    )
    assert [j["id"] for j in response.json()["data"]] == [team_b.id]
