"""The trainer's state on disk, so a restart keeps files, jobs and tuned models.

Layout under the data dir: `files/<id>.json` + `files/<id>.bin`, `jobs/<id>/job.json`, and each
job's adapters under `jobs/<id>/step-<n>/` (one per epoch; the last one is the tuned model).
JSON files are written to a temporary name and renamed, so a kill leaves the old or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sandbox.catalog import Catalog
from sandbox.job_params import JobRequest
from sandbox.records import StoredFile
from sandbox.simulation import Checkpoint, Event, Job, Plan, SimClock


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def save_file(root: Path, stored: StoredFile) -> None:
    folder = root / "files"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stored.id}.bin").write_bytes(stored.content)
    meta = {k: v for k, v in asdict(stored).items() if k != "content"}
    write_json(folder / f"{stored.id}.json", meta)


def delete_file(root: Path, file_id: str) -> None:
    for suffix in (".json", ".bin"):
        (root / "files" / f"{file_id}{suffix}").unlink(missing_ok=True)


def load_files(root: Path) -> list[StoredFile]:
    out = []
    for meta_path in sorted((root / "files").glob("*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        content = meta_path.with_suffix(".bin").read_bytes()
        out.append(StoredFile(content=content, **meta))
    return sorted(out, key=lambda f: (f.created_at, f.id))


def job_dir(root: Path, job_id: str) -> Path:
    return root / "jobs" / job_id


def save_job(root: Path, job: Job, adapters: dict[str, str]) -> None:
    request = asdict(job.request) | {"base": job.request.base.id}
    body = {
        "id": job.id,
        "created_at": job.created_at,
        "request": request,
        "ft_name": job.ft_name,
        "status": job.status,
        "plan": asdict(job.plan) if job.plan else None,
        "steps_done": job.steps_done,
        "error": job.error,
        "finished_at": job.finished_at,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        "result_files": job.result_files,
        "events": [asdict(e) for e in job.events],
        "checkpoints": [asdict(c) for c in job.checkpoints],
        "metric_rows": job.metric_rows,
        "adapters": adapters,  # model or checkpoint name → adapter folder
    }
    write_json(job_dir(root, job.id) / "job.json", body)


def load_jobs(root: Path, catalog: Catalog) -> list[tuple[Job, dict[str, str]]]:
    """Saved jobs, oldest first, each with its adapters. A job whose base model is no longer
    served comes back with a placeholder base and `status` unchanged; the engine decides."""
    out = []
    for path in (root / "jobs").glob("*/job.json"):
        body = json.loads(path.read_text(encoding="utf-8"))
        raw = body["request"]
        base = catalog.resolve(raw["base"])
        if base is None:
            continue  # its base model is not served any more: nothing here could use it
        request = JobRequest(**(raw | {"base": base}))
        job = Job(
            id=body["id"],
            created_at=body["created_at"],
            request=request,
            ft_name=body["ft_name"],
            clock=SimClock(1.0, float(body["created_at"])),
            training=None,
            validation=None,
            file_error=None,
            fault=None,
            status=body["status"],
            plan=Plan(**body["plan"]) if body["plan"] else None,
            steps_done=body["steps_done"],
            error=body["error"],
            finished_at=body["finished_at"],
            fine_tuned_model=body["fine_tuned_model"],
            trained_tokens=body["trained_tokens"],
            result_files=body["result_files"],
            events=[Event(**e) for e in body["events"]],
            checkpoints=[Checkpoint(**c) for c in body["checkpoints"]],
            metric_rows=body["metric_rows"],
        )
        out.append((job, dict(body.get("adapters") or {})))
    return sorted(out, key=lambda pair: (pair[0].created_at, pair[0].id))
