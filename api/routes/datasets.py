from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from api import schemas
from api.deps import PrincipalDep, SessionDep
from shared import blobs
from shared.datasets import from_logs
from shared.datasets import service as datasets
from shared.datasets.from_logs import LogFilter
from shared.datasets.service import DatasetOptions

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _events(raw: list[str] | None) -> list[str] | None:
    # Accept both repeated form fields and one comma-separated value.
    items = [part.strip() for value in raw or [] for part in value.split(",") if part.strip()]
    return items or None


@router.post("", status_code=202, response_model=schemas.Dataset)
def create_dataset(
    session: SessionDep,
    principal: PrincipalDep,
    response: Response,
    file: Annotated[
        UploadFile,
        File(description="JSONL, a JSON array, CSV/TSV or Parquet; optionally gzip-compressed"),
    ],
    preset: Annotated[str, Form()] = "auto",
    system_prompt: Annotated[str | None, Form()] = None,
    user_template: Annotated[
        str | None, Form(description="User message template, e.g. '科室：{department}\n{question}'")
    ] = None,
    field_map: Annotated[
        str | None, Form(description='Preset map: JSON, e.g. {"question": "ask", "answer": "answer"}')
    ] = None,
    sample_size: Annotated[int | None, Form(ge=1)] = None,
    seed: Annotated[int, Form()] = 0,
    validation_fraction: Annotated[float, Form(ge=0, lt=1)] = 0.0,
    target_model: Annotated[str, Form()] = "gpt-4o-mini-2024-07-18",
    n_epochs: Annotated[int | None, Form(ge=1, le=50)] = None,
    webhook_url: Annotated[str | None, Form()] = None,
    webhook_events: Annotated[list[str] | None, Form()] = None,
    format: Annotated[
        str, Form(description="auto (sniffed), jsonl, json (a JSON array), csv, tsv or parquet")
    ] = "auto",
    encoding: Annotated[
        str | None, Form(description="Text encoding, e.g. gbk, gb18030, utf-16; detected when unset")
    ] = None,
) -> dict[str, object]:
    """Upload a file; the worker transforms, validates, counts tokens and quotes it."""
    options = DatasetOptions(
        preset=preset,
        system_prompt=system_prompt or None,
        user_template=user_template or None,
        field_map=field_map or None,
        sample_size=sample_size,
        seed=seed,
        validation_fraction=validation_fraction,
        target_model=target_model,
        n_epochs=n_epochs,
        format=format,
        encoding=encoding or None,
    )
    dataset = datasets.create(
        session,
        project_id=principal.project_id,
        upload=file.file,
        filename=file.filename,
        options=options,
        webhook_url=webhook_url or None,
        webhook_events=_events(webhook_events),
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return datasets.dataset_dict(dataset)


@router.post("/from-logs", status_code=202, response_model=schemas.Dataset)
def create_dataset_from_logs(
    session: SessionDep, principal: PrincipalDep, body: schemas.DatasetFromLogsRequest, response: Response
) -> dict[str, object]:
    """A dataset from logged conversations (aliases with `log_requests`), prepared like an upload."""
    dataset = from_logs.create_from_logs(
        session,
        project_id=principal.project_id,
        filters=LogFilter(
            alias=body.alias,
            model=body.model,
            user=body.user,
            since=body.since,
            until=body.until,
            limit=body.limit,
        ),
        options=DatasetOptions(
            preset="chat",
            system_prompt=body.system_prompt or None,
            sample_size=body.sample_size,
            seed=body.seed,
            validation_fraction=body.validation_fraction,
            target_model=body.target_model,
            n_epochs=body.n_epochs,
        ),
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        webhook_events=body.webhook_events,
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return datasets.dataset_dict(dataset)


@router.get("", response_model=schemas.Page[schemas.Dataset])
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, object]:
    """The project's datasets, newest first."""
    rows, has_more = datasets.list_datasets(
        session, project_id=principal.project_id, limit=limit, after=after
    )
    return {
        "object": "list",
        "data": [datasets.dataset_dict(d, with_report=False) for d in rows],
        "has_more": has_more,
    }


@router.get("/{dataset_id}", response_model=schemas.Dataset)
def get_dataset(session: SessionDep, principal: PrincipalDep, dataset_id: str) -> dict[str, object]:
    """A dataset with its report: counts, line-numbered errors, token statistics, quote."""
    return datasets.dataset_dict(
        datasets.get(session, project_id=principal.project_id, dataset_id=dataset_id)
    )


@router.get("/{dataset_id}/content", response_class=StreamingResponse)
def get_dataset_content(
    session: SessionDep,
    principal: PrincipalDep,
    dataset_id: str,
    split: Annotated[str, Query(pattern="^(train|validation)$")] = "train",
) -> StreamingResponse:
    """The prepared JSONL, streamed."""
    dataset = datasets.get(session, project_id=principal.project_id, dataset_id=dataset_id)
    key = datasets.content_key(dataset, split)
    return StreamingResponse(blobs.iter_chunks(key), media_type="application/jsonl")
