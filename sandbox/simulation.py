"""The fine-tuning job state machine, advanced lazily from a per-job simulated clock.

Nothing runs in the background: every read calls `advance(job, now)`, which replays whatever
transitions fell due since the last read (with the timestamps they would have had), so the
emulator needs no threads and pauses cost nothing. `time_scale` wall seconds = 1 simulated second.

Simulated durations: validating 2 s, queued 2 s, then one step per second — but the running
phase is squeezed into at most 60 s and at most ~60 metric events, so big files stay quick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sandbox import ids
from sandbox.catalog import ORG_ID
from sandbox.faults import JobFault
from sandbox.job_params import JobRequest, resolve_hyperparameters, steps_per_epoch
from sandbox.metrics import checkpoint_metrics, step_message, step_metrics
from sandbox.validation import TrainingData, TrainingFileError

VALIDATE_SECONDS = 2.0
QUEUE_SECONDS = 2.0
STEP_SECONDS = 1.0
MAX_RUNNING_SECONDS = 60.0
MAX_METRIC_EVENTS = 60
KEEP_CHECKPOINTS = 3
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class SimClock:
    """Maps wall time to the job's simulated time; freezing it is what `pause` means."""

    scale: float
    wall_anchor: float
    sim_anchor: float = 0.0
    frozen: bool = False

    def sim(self, wall: float) -> float:
        return self.sim_anchor if self.frozen else self.sim_anchor + (wall - self.wall_anchor) / self.scale

    def wall(self, sim: float) -> float:
        return self.wall_anchor + (sim - self.sim_anchor) * self.scale

    def freeze(self, wall: float) -> None:
        self.sim_anchor, self.wall_anchor, self.frozen = self.sim(wall), wall, True

    def thaw(self, wall: float) -> None:
        self.wall_anchor, self.frozen = wall, False


@dataclass(frozen=True)
class Plan:
    hyperparameters: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    step_seconds: float
    metric_stride: int
    trained_tokens: int
    fail_at_step: int | None


@dataclass
class Event:
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.event",
            "id": self.id,
            "created_at": self.created_at,
            "level": self.level,
            "message": self.message,
            "type": self.type,
            "data": self.data or {},
        }


@dataclass
class Checkpoint:
    id: str
    created_at: int
    job_id: str
    step: int
    name: str
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.checkpoint",
            "id": self.id,
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": self.name,
            "fine_tuning_job_id": self.job_id,
            "step_number": self.step,
            "metrics": self.metrics,
        }


@dataclass
class Job:
    id: str
    created_at: int
    request: JobRequest
    ft_name: str  # decided at creation so checkpoints can be named before the model exists
    clock: SimClock
    training: TrainingData | None
    validation: TrainingData | None
    file_error: TrainingFileError | None
    fault: JobFault | None
    status: str = "validating_files"
    plan: Plan | None = None
    phase_started: float = 0.0
    steps_done: int = 0
    steps_at_phase_start: int = 0
    error: dict[str, Any] | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    metric_rows: list[dict[str, Any]] = field(default_factory=list)

    def emit(
        self,
        sim: float,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        created = max(self.created_at, int(self.clock.wall(sim)))
        self.events.append(Event(ids.event_id(), created, level, message, type, data))

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.plan.hyperparameters if self.plan else self.request.hyperparameters

    def to_dict(self, wall: float) -> dict[str, Any]:
        hp = self.hyperparameters
        supervised_hp = {k: hp[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
        method = self.request.method_type
        estimated = None
        if self.status == "running" and self.plan is not None:
            remaining = (self.plan.total_steps - self.steps_at_phase_start) * self.plan.step_seconds
            estimated = math.ceil(self.clock.wall(self.phase_started + remaining))
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "created_at": self.created_at,
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            # Top-level hyperparameters are reported for supervised jobs only (DPO shows null).
            "hyperparameters": supervised_hp if method == "supervised" else None,
            "model": self.request.model,
            "organization_id": ORG_ID,
            "result_files": list(self.result_files),
            "status": self.status,
            "trained_tokens": self.trained_tokens,
            "training_file": self.request.training_file,
            "validation_file": self.request.validation_file,
            "integrations": self.request.integrations,
            "seed": self.request.seed,
            "estimated_finish": estimated,
            "method": {"type": method, method: {"hyperparameters": dict(hp)}},
            "metadata": self.request.metadata,
            "user_provided_suffix": self.request.suffix,
        }


def make_plan(job: Job) -> Plan:
    assert job.training is not None
    base = job.request.base
    hp = resolve_hyperparameters(job.request.hyperparameters, job.training.n_examples)
    per_epoch = steps_per_epoch(job.training.n_examples, hp["batch_size"])
    total = per_epoch * hp["n_epochs"]
    billable = sum(min(t, base.max_example_tokens) for t in job.training.example_tokens)
    fail_at = None
    if job.fault is not None:
        fail_at = min(total, max(1, int(total * job.fault.at_fraction)))
    return Plan(
        hyperparameters=hp,
        steps_per_epoch=per_epoch,
        total_steps=total,
        step_seconds=min(STEP_SECONDS, MAX_RUNNING_SECONDS / total),
        metric_stride=max(1, math.ceil(total / MAX_METRIC_EVENTS)),
        trained_tokens=billable * hp["n_epochs"],
        fail_at_step=fail_at,
    )


def advance(job: Job, wall: float) -> bool:
    """Apply every transition due by `wall`; True when this call made the job succeed."""
    while job.status not in TERMINAL and job.status != "paused":
        now = job.clock.sim(wall)
        if job.status == "validating_files":
            end = job.phase_started + VALIDATE_SECONDS
            if now < end:
                return False
            if job.file_error is not None:
                fail(job, end, job.file_error.as_dict())
                return False
            job.plan = make_plan(job)
            job.emit(end, "Files validated, moving job to queued state")
            job.status, job.phase_started = "queued", end
        elif job.status == "queued":
            end = job.phase_started + QUEUE_SECONDS
            if now < end:
                return False
            job.emit(end, "Fine-tuning job started")
            job.status, job.phase_started, job.steps_at_phase_start = "running", end, job.steps_done
        else:
            return _advance_running(job, now)
    return False


def _advance_running(job: Job, now: float) -> bool:
    plan = job.plan
    assert plan is not None
    elapsed_steps = int((now - job.phase_started) / plan.step_seconds + 1e-9)
    due = min(plan.total_steps, job.steps_at_phase_start + elapsed_steps)
    while job.steps_done < due:
        step = job.steps_done + 1
        at = job.phase_started + (step - job.steps_at_phase_start) * plan.step_seconds
        _record_step(job, plan, step, at)
        job.steps_done = step
        if plan.fail_at_step == step and job.fault is not None:
            fail(job, at, {"code": job.fault.code, "message": job.fault.message, "param": None})
            return False
        if step == plan.total_steps:
            _succeed(job, at)
            return True
    return False


def _record_step(job: Job, plan: Plan, step: int, at: float) -> None:
    last = step == plan.total_steps
    if step % plan.metric_stride == 0 or last or step == 1:
        data = step_metrics(
            job.request.seed, step, plan.total_steps, validation=job.validation is not None, final=last
        )
        job.emit(at, step_message(data), type="metrics", data=data)
        job.metric_rows.append(data)
    if step % plan.steps_per_epoch == 0:
        data = step_metrics(
            job.request.seed, step, plan.total_steps, validation=job.validation is not None, final=last
        )
        name = f"{job.ft_name}:ckpt-step-{step}"
        created = int(job.clock.wall(at))
        job.checkpoints.append(
            Checkpoint(ids.checkpoint_id(), created, job.id, step, name, checkpoint_metrics(data))
        )
        # OpenAI keeps only the checkpoints of the last three epochs.
        del job.checkpoints[:-KEEP_CHECKPOINTS]
        job.emit(at, f"Checkpoint created at step {step} with Snapshot ID: {name}")


def _succeed(job: Job, at: float) -> None:
    assert job.plan is not None
    job.status = "succeeded"
    job.finished_at = max(job.created_at, int(job.clock.wall(at)))
    job.fine_tuned_model = job.ft_name
    job.trained_tokens = job.plan.trained_tokens
    job.emit(at, f"New fine-tuned model created: {job.ft_name}")
    job.emit(at, "Fine tuning job successfully completed")


def fail(job: Job, at: float, error: dict[str, Any]) -> None:
    job.status, job.error = "failed", error
    job.emit(at, error["message"], level="error")


def cancel(job: Job, wall: float) -> None:
    job.status = "cancelled"
    job.emit(job.clock.sim(wall), "Fine-tuning job cancelled")


def pause(job: Job, wall: float) -> None:
    job.clock.freeze(wall)
    job.status = "paused"
    job.emit(job.clock.sim(wall), "Fine-tuning job paused")


def resume(job: Job, wall: float) -> None:
    # Resuming re-queues the job; training continues from the step it had reached.
    job.clock.thaw(wall)
    job.status, job.phase_started = "queued", job.clock.sim(wall)
    job.emit(job.phase_started, "Fine-tuning job resumed")
