"""The real engine: a sandbox `Store` whose jobs train LoRA adapters and whose models generate.

Everything the HTTP layer sees (routes, request parsing, file validation, job/event/checkpoint
shapes, paging, errors) is the sandbox's; this class replaces what happens behind it:

- a job is validated at creation (the same checks as the sandbox's `validating_files`), then
  waits `queued` for the one training thread: one job trains at a time, in creation order;
- while it runs, each step's metrics become a `metrics` event, each epoch ends in a checkpoint
  (an adapter folder; OpenAI keeps the last three), and success writes the result CSV and names
  the model `ft:<base>:<org>:<suffix>:<id>`;
- cancel marks the job `cancelled` at once and the loop stops before its next step;
- state is on disk (`state.py`); a job found `running` at start-up failed with the trainer (the
  process died under it) and is marked `failed` with code `trainer_restarted`; queued jobs wait on.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from sandbox import ids, simulation
from sandbox.completion import ChatRequest, Completion
from sandbox.errors import ApiError, bad_request
from sandbox.job_params import AUTO, JobRequest, default_epochs, steps_per_epoch
from sandbox.metrics import checkpoint_metrics, results_csv, step_message
from sandbox.records import StoredFile, TunedModel
from sandbox.similarity import AnswerIndex
from sandbox.simulation import Checkpoint, Job, Plan, SimClock
from sandbox.store import Store
from sandbox.validation import parse_training_file
from trainer import state
from trainer.catalog import TrainerCatalog
from trainer.serving import Generation, LoadedBase
from trainer.training import BASE_LEARNING_RATE, LORA_RANK, Cancelled, Hooks, TrainSpec, train

log = logging.getLogger(__name__)

DEFAULT_ORG = "tuneforge-trainer"
KEEP_CHECKPOINTS = 3
# "auto" hyperparameters: epochs by OpenAI's documented rule (sandbox.job_params.default_epochs),
# batch size by example count, and the multiplier 1 (the base learning rate is the trainer's
# --learning-rate, chosen for LoRA).
AUTO_LR_MULTIPLIER = 1.0


def auto_batch_size(n_examples: int) -> int:
    return max(1, min(32, n_examples // 100))


def resolve_hyperparameters(requested: dict[str, Any], n_examples: int) -> dict[str, Any]:
    hp = dict(requested)
    if hp.get("n_epochs") == AUTO:
        hp["n_epochs"] = default_epochs(n_examples)
    if hp.get("batch_size") == AUTO:
        hp["batch_size"] = auto_batch_size(n_examples)
    if hp.get("learning_rate_multiplier") == AUTO:
        hp["learning_rate_multiplier"] = AUTO_LR_MULTIPLIER
    return hp


class TrainerEngine(Store):
    def __init__(
        self,
        catalog: TrainerCatalog,
        data_dir: Path,
        *,
        learning_rate: float = BASE_LEARNING_RATE,
        lora_rank: int = LORA_RANK,
        max_tokens: int = 1024,
        org: str = DEFAULT_ORG,
    ) -> None:
        super().__init__(time_scale=1.0)
        self.catalog = catalog
        self.root = data_dir
        self.learning_rate = learning_rate
        self.lora_rank = lora_rank
        self.max_tokens = max_tokens
        self.org = org
        self._adapters: dict[str, tuple[str, Path]] = {}  # model/checkpoint name → (base id, folder)
        self._loaded: dict[str, LoadedBase] = {}
        self._load_lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._closing = threading.Event()
        self._restore()
        self._worker = threading.Thread(target=self._work, name="trainer", daemon=True)
        self._worker.start()

    def close(self) -> None:
        self._closing.set()
        self._queue.put(None)
        self._worker.join(timeout=30)

    # ---- the sandbox's hooks -----------------------------------------------------------------
    def _advance_all(self) -> None:
        """Jobs move on the training thread, not on reads."""

    def _add_file(
        self, filename: str, purpose: str, content: bytes, created: int, expires_after: int | None
    ) -> StoredFile:
        stored = super()._add_file(filename, purpose, content, created, expires_after)
        state.save_file(self.root, stored)
        return stored

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            result = super().delete_file(file_id)
            state.delete_file(self.root, file_id)
            return result

    # ---- jobs --------------------------------------------------------------------------------
    def create_job(self, request: JobRequest) -> dict[str, Any]:
        if request.model.startswith("ft:"):
            raise bad_request(
                "The trainer tunes base models only; continuing from a fine-tuned model is not supported.",
                param="model",
                code="model_not_supported",
            )
        if request.method_type != "supervised":
            raise bad_request(
                f"The trainer supports the 'supervised' method only, not '{request.method_type}'.",
                param="method.type",
            )
        created = super().create_job(request)
        with self._lock:
            job = self._jobs[created["id"]]
            job.clock = SimClock(1.0, float(job.created_at))
            job.fault = None
            job.ft_name = f"ft:{request.base.id}:{self.org}:{request.suffix or ''}:{ids.random_token(8)}"
            if job.file_error is not None:
                self._fail(job, job.file_error.as_dict())
            else:
                assert job.training is not None
                job.plan = self._plan(job)
                job.status = "queued"
                self._emit(job, "Files validated, moving job to queued state")
                self._queue.put(job.id)
            self._save(job)
            return job.to_dict(self._now())

    def _plan(self, job: Job) -> Plan:
        assert job.training is not None
        n = job.training.n_examples
        hp = resolve_hyperparameters(job.request.hyperparameters, n)
        per_epoch = steps_per_epoch(n, hp["batch_size"])
        return Plan(hp, per_epoch, per_epoch * hp["n_epochs"], 1.0, 1, 0, None)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            result = super().cancel_job(job_id)
            self._save(self._jobs[job_id])
            return result

    def pause_job(self, job_id: str) -> dict[str, Any]:
        raise ApiError(400, "The trainer cannot pause jobs; cancel and start again.", code="unsupported")

    def resume_job(self, job_id: str) -> dict[str, Any]:
        raise ApiError(400, "The trainer cannot pause or resume jobs.", code="unsupported")

    def delete_tuned(self, name: str) -> bool:
        with self._lock:
            if not super().delete_tuned(name):
                return False
            for key in [k for k in self._adapters if k == name or k.startswith(name + ":ckpt-")]:
                del self._adapters[key]
            return True

    # ---- chat --------------------------------------------------------------------------------
    def complete(self, chat: ChatRequest) -> Completion | None:
        base_model = self.catalog.resolve(chat.model)
        if base_model is not None:
            base_id, adapter, folder = base_model.id, None, None
        else:
            with self._lock:
                found = self._adapters.get(chat.model)
            if found is None:
                return None
            base_id, folder = found
            # PEFT adapter names become module keys, where ':' and '.' are not welcome.
            adapter = "a" + hashlib.sha1(str(folder).encode()).hexdigest()[:16]
        loaded = self._base(base_id)
        if adapter is not None and folder is not None:
            loaded.add_adapter(adapter, folder)
        return Generation(loaded, adapter, chat.model, chat.messages, chat)

    def _base(self, base_id: str) -> LoadedBase:
        with self._load_lock:
            if base_id not in self._loaded:
                self._loaded[base_id] = LoadedBase(self.catalog.source_of(base_id))
            return self._loaded[base_id]

    # ---- the training thread -----------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._closing.is_set():
                return
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.status != "queued":
                    continue
                job.status = "running"
                self._emit(job, "Fine-tuning job started")
                self._save(job)
            try:
                self._run(job)
            except Exception as exc:  # a job's failure must not stop the thread serving the queue
                log.exception("job %s failed", job.id)
                with self._lock:
                    self._fail(
                        job, {"code": "training_failed", "message": f"Training failed: {exc}", "param": None}
                    )
                    self._save(job)

    def _run(self, job: Job) -> None:
        assert job.plan is not None
        hp = job.plan.hyperparameters
        examples = [e["messages"] for e in self._examples(job.request.training_file)]
        validation = (
            [e["messages"] for e in self._examples(job.request.validation_file)]
            if job.request.validation_file
            else []
        )
        folder = state.job_dir(self.root, job.id)
        started = time.monotonic()

        def on_step(metrics: dict[str, Any]) -> None:
            with self._lock:
                job.steps_done = metrics["step"]
                assert job.plan is not None
                # Measured seconds per step, so `estimated_finish` is the real one.
                elapsed = time.monotonic() - started
                job.plan = Plan(**{**job.plan.__dict__, "step_seconds": elapsed / metrics["step"]})
                job.phase_started = job.clock.sim(self._now())
                job.steps_at_phase_start = metrics["step"]
                self._emit(job, step_message(metrics), type="metrics", data=metrics)
                job.metric_rows.append(metrics)
                self._save(job)

        def on_checkpoint(step: int, path: Path, metrics: dict[str, Any]) -> None:
            with self._lock:
                name = f"{job.ft_name}:ckpt-step-{step}"
                job.checkpoints.append(
                    Checkpoint(
                        ids.checkpoint_id(), int(self._now()), job.id, step, name, checkpoint_metrics(metrics)
                    )
                )
                del job.checkpoints[:-KEEP_CHECKPOINTS]
                self._adapters[name] = (job.request.base.id, path)
                self._emit(job, f"Checkpoint created at step {step} with Snapshot ID: {name}")
                self._save(job)

        spec = TrainSpec(
            base_path=self.catalog.source_of(job.request.base.id),
            examples=examples,
            validation=validation,
            n_epochs=hp["n_epochs"],
            batch_size=hp["batch_size"],
            learning_rate_multiplier=hp["learning_rate_multiplier"],
            seed=job.request.seed,
            out_dir=folder,
            max_tokens=self.max_tokens,
            base_learning_rate=self.learning_rate,
            lora_rank=self.lora_rank,
            lora_alpha=2 * self.lora_rank,
        )
        hooks = Hooks(on_step, on_checkpoint, lambda: job.status != "running" or self._closing.is_set())
        try:
            result = train(spec, hooks)
        except Cancelled:
            with self._lock:
                if job.status == "running":  # the trainer is shutting down under it
                    self._fail(job, _restart_error(job.steps_done))
                else:
                    self._emit(job, f"Training stopped at step {job.steps_done}")
                self._save(job)
            return
        with self._lock:
            if job.status != "running":
                return
            self._succeed(job, result.adapter_dir, result.trained_tokens)
            self._save(job)

    def _succeed(self, job: Job, adapter_dir: Path, trained_tokens: int) -> None:
        now = int(self._now())
        result = self._add_file(
            "step_metrics.csv", "fine-tune-results", results_csv(job.metric_rows), now, None
        )
        job.result_files = [result.id]
        job.status, job.finished_at = "succeeded", now
        job.fine_tuned_model, job.trained_tokens = job.ft_name, trained_tokens
        self._register(job, adapter_dir)
        self._emit(job, f"New fine-tuned model created: {job.ft_name}")
        self._emit(job, "Fine tuning job successfully completed")

    def _register(self, job: Job, adapter_dir: Path) -> None:
        assert job.finished_at is not None
        tuned = TunedModel(job.ft_name, job.finished_at, job.id, job.request.base, AnswerIndex([]))
        self._models[tuned.id] = tuned
        self._adapters[job.ft_name] = (job.request.base.id, adapter_dir)
        for checkpoint in job.checkpoints:
            self._checkpoints[checkpoint.name] = tuned.id

    def _examples(self, file_id: str | None) -> list[dict[str, Any]]:
        stored = self._files[file_id or ""]
        return parse_training_file(stored.content, model="gpt-4o-mini", min_examples=1).examples

    # ---- helpers -----------------------------------------------------------------------------
    def _emit(self, job: Job, message: str, **kwargs: Any) -> None:
        job.emit(job.clock.sim(self._now()), message, **kwargs)

    def _fail(self, job: Job, error: dict[str, Any]) -> None:
        job.finished_at = int(self._now())
        simulation.fail(job, job.clock.sim(self._now()), error)

    def _save(self, job: Job) -> None:
        adapters = {k: str(v[1]) for k, v in self._adapters.items() if k.startswith(job.ft_name)}
        state.save_job(self.root, job, adapters)

    def _restore(self) -> None:
        for stored in state.load_files(self.root):
            self._files[stored.id] = stored
        for job, adapters in state.load_jobs(self.root, self.catalog):
            self._jobs[job.id] = job
            for name, folder in adapters.items():
                self._adapters[name] = (job.request.base.id, Path(folder))
            if job.status == "succeeded":
                self._register(job, Path(adapters[job.ft_name]))
            elif job.status == "running":
                self._fail(job, _restart_error(job.steps_done))
                self._save(job)
            elif job.status in ("queued", "validating_files"):
                job.status = "queued"
                self._queue.put(job.id)


def _restart_error(step: int) -> dict[str, Any]:
    return {
        "code": "trainer_restarted",
        "message": f"The trainer stopped while this job was training (at step {step}); create the job again.",
        "param": None,
    }
