"""Datasets: intake (API side), preparation (worker side), and quotes.

The upload is streamed into the blob store before the row exists; preparation reads it back
in one pass and writes the training and validation files next to it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import blobs, pricing, queue, tokens
from shared.config import get_settings
from shared.datasets import intake, pipeline
from shared.datasets.presets import MappingOptions, resolve_preset
from shared.errors import DomainError, InvalidInput, InvalidState, NotFound, PayloadTooLarge
from shared.ids import new_id
from shared.models import Dataset, unix
from shared.webhooks import service as webhooks

log = logging.getLogger(__name__)

PENDING, PROCESSING, READY, FAILED = "pending", "processing", "ready", "failed"


@dataclass(frozen=True)
class DatasetOptions:
    preset: str = "auto"
    system_prompt: str | None = None
    # See shared/datasets/presets: a str.format template for the user message, and the columns
    # of preset `map` (a dict, or its JSON text as it arrives in a form field).
    user_template: str | None = None
    field_map: dict[str, str] | str | None = None
    sample_size: int | None = None
    seed: int = 0
    validation_fraction: float = 0.0
    target_model: str = "gpt-4o-mini-2024-07-18"
    n_epochs: int | None = None
    # How to read the upload (DESIGN §7): auto|jsonl|json|csv|tsv|parquet, and a text encoding
    # (None: detected). Unknown values fail the request with invalid_format / invalid_encoding.
    format: str = "auto"
    encoding: str | None = None

    def check(self) -> None:
        mapping = MappingOptions(
            system_prompt=self.system_prompt, user_template=self.user_template, field_map=self.field_map
        )
        resolve_preset(self.preset, mapping)
        if self.sample_size is not None and self.sample_size < 1:
            raise InvalidInput(
                "sample_size must be at least 1.", code="invalid_sample_size", param="sample_size"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise InvalidInput(
                "validation_fraction must be in [0, 1).",
                code="invalid_validation_fraction",
                param="validation_fraction",
            )
        if self.n_epochs is not None:
            pricing.validate_n_epochs(self.n_epochs)
        pricing.resolve_model(self.target_model)
        intake.check_options(self.format, self.encoding)


def create(
    session: Session,
    *,
    project_id: str,
    upload: BinaryIO,
    filename: str | None,
    options: DatasetOptions,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Dataset:
    options.check()
    webhooks.validate_callback(webhook_url, webhook_events)
    dataset_id = new_id("ds")
    raw_key = f"datasets/{dataset_id}/raw"
    limit = get_settings().upload_max_bytes
    try:
        size = blobs.write_stream(raw_key, upload, max_bytes=limit)
    except OverflowError as exc:
        raise PayloadTooLarge(
            f"The upload is larger than the limit of {limit} bytes (TUNEFORGE_UPLOAD_MAX_BYTES). "
            "Sample or split the file, or ask the operator to raise the limit.",
            param="file",
        ) from exc
    if size == 0:
        blobs.delete_prefix(f"datasets/{dataset_id}")
        raise InvalidInput("The uploaded file is empty.", code="empty_file", param="file")
    dataset = Dataset(
        id=dataset_id,
        project_id=project_id,
        status=PENDING,
        filename=filename,
        options=options.__dict__.copy(),
        raw_blob=raw_key,
        raw_bytes=size,
        webhook_url=webhook_url,
        webhook_events={"types": webhook_events} if webhook_events else None,
    )
    session.add(dataset)
    session.flush()
    queue.enqueue(session, queue.TaskName.PREPARE_DATASET, dataset_id=dataset.id)
    return dataset


def get(session: Session, *, project_id: str, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.project_id != project_id:
        raise NotFound(
            f"No dataset {dataset_id!r} in this project.", code="dataset_not_found", param="dataset_id"
        )
    return dataset


def list_datasets(
    session: Session, *, project_id: str, limit: int, after: str | None
) -> tuple[list[Dataset], bool]:
    stmt = (
        select(Dataset).where(Dataset.project_id == project_id).order_by(Dataset.id.desc()).limit(limit + 1)
    )
    if after:
        stmt = stmt.where(Dataset.id < after)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def content_key(dataset: Dataset, split: str) -> str:
    key = {"train": dataset.train_blob, "validation": dataset.validation_blob}.get(split)
    if split not in ("train", "validation"):
        raise InvalidInput("split must be 'train' or 'validation'.", code="invalid_split", param="split")
    if dataset.status != READY or key is None:
        raise NotFound(
            f"Dataset {dataset.id} has no {split} file (status: {dataset.status}).", code="content_not_ready"
        )
    return key


def start(session: Session, dataset_id: str) -> bool:
    """Mark a pending dataset as processing; False when there is nothing to do."""
    dataset = session.get(Dataset, dataset_id, with_for_update=True)
    if dataset is None or dataset.status in (READY, FAILED):
        return False
    dataset.status = PROCESSING
    session.flush()
    return True


def prepare(session: Session, dataset_id: str) -> None:
    """Transform, validate, count and quote; ends `ready` or `failed`, never raises for bad data."""
    dataset = session.get(Dataset, dataset_id, with_for_update=True)
    if dataset is None or dataset.status in (READY, FAILED):
        return
    opts = DatasetOptions(**dataset.options)
    train_key = f"datasets/{dataset.id}/train.jsonl"
    validation_key = f"datasets/{dataset.id}/validation.jsonl"
    try:
        with (
            blobs.open_read(dataset.raw_blob) as source,
            blobs.open_write(train_key) as train_out,
            blobs.open_write(validation_key) as validation_out,
        ):
            report = pipeline.prepare(
                source,
                train_out=train_out,
                validation_out=validation_out,
                preset=opts.preset,
                system_prompt=opts.system_prompt,
                user_template=opts.user_template,
                field_map=opts.field_map,
                sample_size=opts.sample_size,
                seed=opts.seed,
                validation_fraction=opts.validation_fraction,
                target_model=opts.target_model,
                n_epochs=opts.n_epochs,
                error_limit=get_settings().dataset_error_limit,
                format=opts.format,
                encoding=opts.encoding,
                max_decompressed_bytes=get_settings().dataset_max_decompressed_bytes,
            )
    except DomainError as exc:
        _finish(session, dataset, FAILED, report=None, error=(exc.code, exc.message))
        return
    except Exception:  # noqa: BLE001 - a bug must fail one dataset, not the worker
        log.exception("dataset %s failed unexpectedly", dataset.id)
        _finish(
            session,
            dataset,
            FAILED,
            report=None,
            error=(
                "internal_error",
                "Preparation failed unexpectedly; the error was logged. "
                "Retry with a new upload or contact the operator.",
            ),
        )
        return
    report_dict = report.to_dict()
    problem = pipeline.dataset_problem(report)
    if problem is not None:
        _finish(session, dataset, FAILED, report=report_dict, error=problem)
        return
    dataset.train_blob = train_key
    dataset.validation_blob = validation_key
    _finish(session, dataset, READY, report=report_dict, error=None)


def quote(session: Session, dataset: Dataset, *, model: str, n_epochs: int | None) -> dict[str, Any]:
    """The training quote for `model`; reuses the report's when it was made for the same model."""
    model = pricing.resolve_model(model).name
    cached = (dataset.report or {}).get("quote") or {}
    if cached.get("model") == model and (
        n_epochs is None and cached.get("n_epochs_auto") or cached.get("n_epochs") == n_epochs
    ):
        return dict(cached)
    if dataset.train_blob is None:
        raise InvalidState(
            f"Dataset {dataset.id} is {dataset.status}; it has no training file to quote.",
            code="dataset_not_ready",
            param="dataset_id",
        )
    encoding = tokens.encoding_for_model(model)
    with blobs.open_read(dataset.train_blob) as handle:
        counts = [
            tokens.count_training_example(orjson.loads(line), encoding) for line in handle if line.strip()
        ]
    return pricing.quote(model, example_token_counts=counts, n_epochs=n_epochs).to_dict()


def claim_stale(session: Session, *, now: datetime, older_than: datetime, limit: int = 100) -> list[str]:
    """Unfinished datasets nobody has touched for a while (a lost message or a dead worker);
    touching `updated_at` is the lease, and rows a worker holds locked are skipped."""
    stmt = (
        select(Dataset)
        .where(Dataset.status.in_((PENDING, PROCESSING)), Dataset.updated_at < older_than)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for dataset in rows:
        dataset.updated_at = now
    session.flush()
    return [d.id for d in rows]


def dataset_dict(dataset: Dataset, *, with_report: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": dataset.id,
        "object": "dataset",
        "status": dataset.status,
        "filename": dataset.filename,
        "bytes": dataset.raw_bytes,
        "options": dataset.options,
        "error": {"code": dataset.error_code, "message": dataset.error_message}
        if dataset.error_code
        else None,
        "created_at": unix(dataset.created_at),
        "updated_at": unix(dataset.updated_at),
    }
    if with_report:
        body["report"] = dataset.report
    return body


def _finish(
    session: Session,
    dataset: Dataset,
    status: str,
    *,
    report: dict[str, Any] | None,
    error: tuple[str, str] | None,
) -> None:
    dataset.status = status
    dataset.report = report
    dataset.error_code, dataset.error_message = error if error else (None, None)
    if status == FAILED:
        blobs.delete(f"datasets/{dataset.id}/train.jsonl")
        blobs.delete(f"datasets/{dataset.id}/validation.jsonl")
    session.flush()
    webhooks.emit(
        session,
        project_id=dataset.project_id,
        event_type=f"dataset.{status}",
        data=dataset_dict(dataset),
        callback_url=dataset.webhook_url,
        callback_events=(dataset.webhook_events or {}).get("types"),
    )
