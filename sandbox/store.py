"""All sandbox state, in memory, behind one lock: files, jobs and the fine-tuned models they produce.

Routes stay thin; everything that reads or changes state comes through here so the lazy job clock
is applied (`_advance_all`) before any answer that could depend on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox import completion, ids, simulation
from sandbox.catalog import ORG_SLUG, SANDBOX_CATALOG
from sandbox.errors import ApiError, bad_request, conflict, not_found
from sandbox.faults import job_fault, job_time_scale
from sandbox.job_params import JobRequest
from sandbox.metrics import results_csv
from sandbox.paging import page_after
from sandbox.records import StoredFile, TunedModel
from sandbox.similarity import AnswerIndex
from sandbox.simulation import Job, SimClock
from sandbox.validation import TrainingData, TrainingFileError, parse_training_file, question_and_answer

NO_METADATA = "null"  # `metadata=null` in the job list query: jobs without metadata


class Store:
    """The simulated engine. Routes use its public methods and `catalog`; the real trainer
    (trainer/engine.py) is a Store whose jobs train and whose models generate."""

    catalog = SANDBOX_CATALOG

    def __init__(self, time_scale: float, now: Callable[[], float] = time.time) -> None:
        # A zero scale would divide by zero; a tiny one means "finish almost at once".
        self.time_scale = max(time_scale, 1e-6)
        self._now = now
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._jobs: dict[str, Job] = {}
        self._models: dict[str, TunedModel] = {}
        self._checkpoints: dict[str, str] = {}  # checkpoint model name → tuned model id
        # Chat streams that reached `[DONE]` and ones whose client went away first.
        self._streams = {"completed": 0, "cut": 0}

    def stream_ended(self, completed: bool) -> None:
        with self._lock:
            self._streams["completed" if completed else "cut"] += 1

    # ---- files -------------------------------------------------------------------------------
    def add_file(
        self, filename: str, purpose: str, content: bytes, expires_after: int | None = None
    ) -> dict[str, Any]:
        with self._lock:
            return self._add_file(filename, purpose, content, int(self._now()), expires_after).to_dict()

    def _add_file(
        self, filename: str, purpose: str, content: bytes, created: int, expires_after: int | None
    ) -> StoredFile:
        expires_at = created + expires_after if expires_after else None
        stored = StoredFile(ids.file_id(), filename, purpose, content, created, expires_at)
        self._files[stored.id] = stored
        return stored

    def get_file(self, file_id: str) -> StoredFile:
        with self._lock:
            self._advance_all()
            stored = self._files.get(file_id)
            if stored is None:
                raise not_found(f"No such File object: {file_id}", param="id")
            return stored

    def list_files(self, purpose: str | None, limit: int, order: str, after: str | None) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            files = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
            if order == "desc":
                files.reverse()
            page, more = page_after(files, lambda f: f.id, after, limit)
            # The spec types first_id/last_id as strings, so an empty page carries "" rather than null.
            return {
                "object": "list",
                "data": [f.to_dict() for f in page],
                "first_id": page[0].id if page else "",
                "last_id": page[-1].id if page else "",
                "has_more": more,
            }

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self.get_file(file_id)
            del self._files[file_id]
            return {"id": file_id, "object": "file", "deleted": True}

    # ---- jobs --------------------------------------------------------------------------------
    def create_job(self, request: JobRequest) -> dict[str, Any]:
        with self._lock:
            training = self._training_source(request.training_file, "training_file")
            validation = (
                self._training_source(request.validation_file, "validation_file")
                if request.validation_file
                else None
            )
            if request.model.startswith("ft:") and request.model not in self._models:
                raise ApiError(
                    400,
                    f"Model {request.model} does not exist or is not available for fine-tuning.",
                    param="model",
                    code="model_not_found",
                )
        # Parsing and token counting happen outside the lock: file content never changes.
        file_error: TrainingFileError | None = None
        train_data: TrainingData | None = None
        valid_data: TrainingData | None = None
        try:
            model = request.base.id
            train_data = parse_training_file(training.content, model=model, method=request.method_type)
            if validation is not None:
                valid_data = parse_training_file(
                    validation.content,
                    model=model,
                    method=request.method_type,
                    param="validation_file",
                    min_examples=1,
                )
        except TrainingFileError as exc:
            file_error = exc
        with self._lock:
            wall = self._now()
            job_id = ids.job_id()
            ft_name = f"ft:{request.base.id}:{ORG_SLUG}:{request.suffix or ''}:{ids.random_token(8)}"
            job = Job(
                id=job_id,
                created_at=int(wall),
                request=request,
                ft_name=ft_name,
                clock=SimClock(job_time_scale(request.metadata, self.time_scale), wall),
                training=train_data,
                validation=valid_data,
                file_error=file_error,
                fault=job_fault(request.metadata, request.suffix),
            )
            job.emit(0.0, "Created fine-tuning job")
            files = request.training_file + (
                f" and validation file: {request.validation_file}" if request.validation_file else ""
            )
            job.emit(0.0, f"Validating training file: {files}")
            self._jobs[job_id] = job
            return job.to_dict(wall)

    def _training_source(self, file_id: str, param: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise bad_request(f"invalid {param}: {file_id}", param=param, code="invalid_file")
        if stored.purpose != "fine-tune":
            raise bad_request(
                f"File {file_id} has purpose '{stored.purpose}'; fine-tuning needs purpose 'fine-tune'.",
                param=param,
                code="invalid_file",
            )
        return stored

    def _job(self, job_id: str) -> Job:
        self._advance_all()
        job = self._jobs.get(job_id)
        if job is None:
            raise not_found(
                f"Could not find fine-tuning job: {job_id}",
                param="fine_tuning_job_id",
                code="fine_tune_not_found",
            )
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return self._job(job_id).to_dict(self._now())

    def list_jobs(
        self, after: str | None, limit: int, metadata: dict[str, str] | str | None
    ) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            jobs = [j for j in reversed(self._jobs.values()) if _metadata_matches(j, metadata)]
            page, more = page_after(jobs, lambda j: j.id, after, limit)
            wall = self._now()
            return {"object": "list", "data": [j.to_dict(wall) for j in page], "has_more": more}

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            if job.status in simulation.TERMINAL:
                raise conflict(f"Job {job_id} has already {job.status} and cannot be cancelled.")
            simulation.cancel(job, self._now())
            return job.to_dict(self._now())

    def pause_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            if job.status not in ("queued", "running"):
                raise conflict(f"Job {job_id} is {job.status}; only queued or running jobs can be paused.")
            simulation.pause(job, self._now())
            return job.to_dict(self._now())

    def resume_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            if job.status != "paused":
                raise conflict(f"Job {job_id} is {job.status}; only paused jobs can be resumed.")
            simulation.resume(job, self._now())
            return job.to_dict(self._now())

    def list_events(self, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            events = list(reversed(self._job(job_id).events))
            page, more = page_after(events, lambda e: e.id, after, limit)
            return {"object": "list", "data": [e.to_dict() for e in page], "has_more": more}

    def list_checkpoints(self, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            checkpoints = list(reversed(self._job(job_id).checkpoints))
            page, more = page_after(checkpoints, lambda c: c.id, after, limit)
            return {
                "object": "list",
                "data": [c.to_dict() for c in page],
                "has_more": more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }

    def job_models(self, job_id: str) -> list[str]:
        """The model names a job is about (for model-scoped faults); empty for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return []
            names = [job.request.model, job.request.base.id]
            return names + ([job.fine_tuned_model] if job.fine_tuned_model else [])

    def counts(self) -> dict[str, Any]:
        """What exists, for `/sandbox/stats`: jobs (total and per `key=value` of metadata), files."""
        with self._lock:
            by_metadata: dict[str, int] = {}
            for job in self._jobs.values():
                for key, value in (job.request.metadata or {}).items():
                    by_metadata[f"{key}={value}"] = by_metadata.get(f"{key}={value}", 0) + 1
            files: dict[str, int] = {}
            for stored in self._files.values():
                files[stored.purpose] = files.get(stored.purpose, 0) + 1
            return {
                "jobs": {"created": len(self._jobs), "by_metadata": by_metadata},
                "files": files,
                "chat_streams": dict(self._streams),
            }

    def _advance_all(self) -> None:
        wall = self._now()
        for job in self._jobs.values():
            if job.status not in simulation.TERMINAL and simulation.advance(job, wall):
                self._on_success(job)

    def _on_success(self, job: Job) -> None:
        assert job.finished_at is not None and job.training is not None
        result = self._add_file(
            "step_metrics.csv", "fine-tune-results", results_csv(job.metric_rows), job.finished_at, None
        )
        job.result_files = [result.id]
        pairs = [qa for qa in map(question_and_answer, job.training.examples) if qa is not None]
        tuned = TunedModel(job.ft_name, job.finished_at, job.id, job.request.base, AnswerIndex(pairs))
        self._models[tuned.id] = tuned
        for checkpoint in job.checkpoints:
            self._checkpoints[checkpoint.name] = tuned.id

    # ---- models ------------------------------------------------------------------------------
    def complete(self, chat: completion.ChatRequest) -> completion.Completion | None:
        """The answer to a chat request; None for an unknown model."""
        return completion.simulated(self, self.catalog, chat)

    def tuned_models(self) -> list[TunedModel]:
        with self._lock:
            self._advance_all()
            return list(self._models.values())

    def find_tuned(self, name: str) -> TunedModel | None:
        """A fine-tuned model by name, or by the name of one of its kept checkpoints."""
        with self._lock:
            self._advance_all()
            return self._models.get(name) or self._models.get(self._checkpoints.get(name, ""))

    def delete_tuned(self, name: str) -> bool:
        with self._lock:
            self._advance_all()
            if self._models.pop(name, None) is None:
                return False
            self._checkpoints = {k: v for k, v in self._checkpoints.items() if v != name}
            return True


def _metadata_matches(job: Job, wanted: dict[str, str] | str | None) -> bool:
    if wanted is None:
        return True
    if wanted == NO_METADATA:
        return not job.request.metadata
    assert isinstance(wanted, dict)
    have = job.request.metadata or {}
    return all(have.get(key) == value for key, value in wanted.items())


def store_of(request: Any) -> Store:
    """The app's store, for routes (`create_app` puts it on `app.state`)."""
    store: Store = request.app.state.store
    return store
