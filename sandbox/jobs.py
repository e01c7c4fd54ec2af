"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events and checkpoints."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from sandbox.errors import bad_request
from sandbox.job_params import parse_job_request
from sandbox.store import NO_METADATA, store_of

router = APIRouter(prefix="/fine_tuning/jobs")

_METADATA_KEY = re.compile(r"^metadata\[(.*)\]$")


@router.post("")
def create_job(request: Request, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    store = store_of(request)
    return store.create_job(parse_job_request(body, store.catalog))


@router.get("")
def list_jobs(
    request: Request, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    return store_of(request).list_jobs(after, limit, _metadata_filter(request))


def _metadata_filter(request: Request) -> dict[str, str] | str | None:
    """The SDK sends `metadata[k]=v` (deepObject); `metadata=null` selects jobs without metadata."""
    wanted: dict[str, str] = {}
    null = False
    for key, value in request.query_params.multi_items():
        match = _METADATA_KEY.match(key)
        if match:
            wanted[match.group(1)] = value
        elif key == "metadata":
            if value != NO_METADATA:
                raise bad_request(
                    "metadata must be 'null' or given as metadata[key]=value.", param="metadata"
                )
            null = True
    if null and wanted:
        raise bad_request(
            "Use either metadata=null or metadata[key]=value filters, not both.", param="metadata"
        )
    if null:
        return NO_METADATA
    return wanted or None


@router.get("/{job_id}")
def retrieve_job(request: Request, job_id: str) -> dict[str, Any]:
    return store_of(request).get_job(job_id)


@router.post("/{job_id}/cancel")
def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    return store_of(request).cancel_job(job_id)


@router.post("/{job_id}/pause")
def pause_job(request: Request, job_id: str) -> dict[str, Any]:
    return store_of(request).pause_job(job_id)


@router.post("/{job_id}/resume")
def resume_job(request: Request, job_id: str) -> dict[str, Any]:
    return store_of(request).resume_job(job_id)


@router.get("/{job_id}/events")
def list_events(
    request: Request, job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    return store_of(request).list_events(job_id, after, limit)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    request: Request, job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    return store_of(request).list_checkpoints(job_id, after, limit)
