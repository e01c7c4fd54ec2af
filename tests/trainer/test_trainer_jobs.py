"""The trainer over HTTP with the OpenAI SDK: a job that really trains (metrics, a checkpoint per
epoch, the result file, the model name), chat from the adapter and the base (greedy, seeded
sampling, streaming, usage), held-out loss below the base's, one job at a time with cancel
stopping within a step, and a kill mid-job that leaves the job failed with a reason."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.support.paths import HUATUO
from tests.support.procs import wait_for
from tests.trainer.conftest import TrainerProc, start_trainer

SYSTEM = "你是一名专业的医生，请根据患者的问题给出建议。"
TERMINAL = ("succeeded", "failed", "cancelled")


def conversations(start: int, count: int) -> list[list[dict[str, str]]]:
    rows = [
        json.loads(line) for line in HUATUO.read_text(encoding="utf-8").splitlines()[start : start + count]
    ]
    return [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": r["questions"]},
            {"role": "assistant", "content": r["answers"]},
        ]
        for r in rows
    ]


def upload(sdk: OpenAI, convs: list[list[dict[str, str]]]) -> str:
    body = "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in convs)
    return sdk.files.create(file=("data.jsonl", body.encode()), purpose="fine-tune").id


def sdk_for(server: TrainerProc) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0, timeout=120)


def wait_job(sdk: OpenAI, job_id: str, timeout: float = 180) -> Any:
    return wait_for(
        lambda: (job := sdk.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and job,
        timeout,
        interval=0.5,
        what=f"job {job_id}",
    )


def events(sdk: OpenAI, job_id: str) -> list[Any]:
    """Oldest first."""
    return list(reversed(sdk.fine_tuning.jobs.list_events(job_id, limit=1000).data))


def test_a_job_trains_a_lora_adapter_and_serves_it(trainer: TrainerProc) -> None:
    sdk = sdk_for(trainer)
    train, valid = upload(sdk, conversations(0, 20)), upload(sdk, conversations(200, 10))
    job = sdk.fine_tuning.jobs.create(
        model="tiny",
        training_file=train,
        validation_file=valid,
        suffix="medqa",
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
    )
    assert job.status in ("validating_files", "queued", "running")
    job = wait_job(sdk, job.id)
    assert job.status == "succeeded", job
    assert job.fine_tuned_model.startswith("ft:tiny:tuneforge-trainer:medqa:")
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    assert job.trained_tokens and job.trained_tokens > 0

    metrics = [e.data for e in events(sdk, job.id) if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 11))  # 20 examples / 4, twice
    for m in metrics:
        assert m["total_steps"] == 10 and m["train_loss"] > 0 and "valid_loss" in m
        assert 0 <= m["train_mean_token_accuracy"] <= 1
    assert "full_valid_loss" in metrics[-1]
    first, last = sum(m["train_loss"] for m in metrics[:3]), sum(m["train_loss"] for m in metrics[-3:])
    assert last < first

    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(c.step_number for c in checkpoints) == [5, 10]
    assert all(
        c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}"
        for c in checkpoints
    )

    (result_id,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(sdk.files.content(result_id).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert float(rows[0]["train_loss"]) == metrics[0]["train_loss"] and rows[0]["valid_loss"]

    assert job.fine_tuned_model in [m.id for m in sdk.models.list()]
    question = conversations(0, 1)[0][:2]
    for model in (job.fine_tuned_model, checkpoints[-1].fine_tuned_model_checkpoint, "tiny"):
        greedy = sdk.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=24)
        text = greedy.choices[0].message.content
        assert greedy.model == model and greedy.usage.prompt_tokens > 10
        assert 0 < greedy.usage.completion_tokens <= 24
        assert greedy.choices[0].finish_reason in ("stop", "length")
        chunks = list(
            sdk.chat.completions.create(
                model=model,
                messages=question,
                temperature=0,
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == text and len(pieces) > 1
        assert chunks[-1].usage.completion_tokens == greedy.usage.completion_tokens
    # Sampling follows the request: the same seed gives the same text, n gives n choices.
    sampled = [
        sdk.chat.completions.create(
            model="tiny", messages=question, temperature=1.0, seed=11, max_tokens=16, n=2
        )
        for _ in range(2)
    ]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    assert len(sampled[0].choices) == 2


def test_the_adapter_beats_the_base_on_held_out_rows(trainer: TrainerProc, tiny_model: Path) -> None:
    from trainer.training import held_out_loss

    sdk = sdk_for(trainer)
    job = sdk.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(sdk, conversations(0, 40)),
        hyperparameters={"n_epochs": 2, "batch_size": 2},
        seed=5,
    )
    job = wait_job(sdk, job.id)
    assert job.status == "succeeded", job
    last = max(sdk.fine_tuning.jobs.checkpoints.list(job.id).data, key=lambda c: c.step_number)
    adapter = trainer.data_dir / "jobs" / job.id / f"step-{last.step_number}"
    held_out = conversations(1000, 20)
    assert held_out_loss(str(tiny_model), adapter, held_out) < held_out_loss(str(tiny_model), None, held_out)


def test_one_job_at_a_time_and_cancel_stops_within_a_step(trainer: TrainerProc) -> None:
    sdk = sdk_for(trainer)
    data = upload(sdk, conversations(300, 20))
    long = sdk.fine_tuning.jobs.create(
        model="tiny", training_file=data, hyperparameters={"n_epochs": 20, "batch_size": 1}
    )
    short = sdk.fine_tuning.jobs.create(
        model="tiny", training_file=data, hyperparameters={"n_epochs": 1, "batch_size": 10}
    )
    wait_for(
        lambda: any(e.type == "metrics" for e in events(sdk, long.id)), 60, what="the long job's first step"
    )
    assert sdk.fine_tuning.jobs.retrieve(short.id).status == "queued"
    assert sdk.fine_tuning.jobs.cancel(long.id).status == "cancelled"
    wait_for(
        lambda: any(e.message.startswith("Training stopped at step") for e in events(sdk, long.id)),
        60,
        what="the long job to stop",
    )
    history = events(sdk, long.id)
    cancelled_at = next(i for i, e in enumerate(history) if e.message == "Fine-tuning job cancelled")
    assert len([e for e in history[cancelled_at:] if e.type == "metrics"]) <= 1
    done = sdk.fine_tuning.jobs.retrieve(long.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    assert wait_job(sdk, short.id).status == "succeeded"
    with pytest.raises(Exception) as refused:
        sdk.fine_tuning.jobs.cancel(short.id)
    assert getattr(refused.value, "status_code", None) == 400


def test_a_killed_trainer_leaves_the_running_job_failed_with_a_reason(
    tiny_model: Path, tmp_path: Path
) -> None:
    server = start_trainer("trainer-killed", tmp_path, [f"tiny={tiny_model}"])
    try:
        sdk = sdk_for(server)
        data = upload(sdk, conversations(400, 20))
        running = sdk.fine_tuning.jobs.create(
            model="tiny", training_file=data, hyperparameters={"n_epochs": 20}
        )
        waiting = sdk.fine_tuning.jobs.create(
            model="tiny", training_file=data, hyperparameters={"n_epochs": 1, "batch_size": 10}
        )
        wait_for(lambda: any(e.type == "metrics" for e in events(sdk, running.id)), 60, what="a first step")
    finally:
        server.kill()
    server = start_trainer("trainer-restarted", tmp_path, [f"tiny={tiny_model}"])
    try:
        sdk = sdk_for(server)
        job = sdk.fine_tuning.jobs.retrieve(running.id)
        assert job.status == "failed" and job.error.code == "trainer_restarted"
        assert "create the job again" in job.error.message
        assert events(sdk, running.id)[-1].level == "error"
        # The job that was waiting is still in the queue and trains now; the files survived.
        assert wait_job(sdk, waiting.id).status == "succeeded"
        assert data in [f.id for f in sdk.files.list().data]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        # Pause is OpenAI's, not the trainer's: refused with a code, not a 500.
        response = httpx.post(
            f"{server.url}/v1/fine_tuning/jobs/{waiting.id}/pause", headers={"Authorization": "Bearer k"}
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported"
    finally:
        server.stop()
