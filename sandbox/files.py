"""`/v1/files`: upload, list, retrieve, download and delete files (stored in memory)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from sandbox.errors import bad_request
from sandbox.store import store_of

router = APIRouter()

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_FILE_BYTES = 512 * 1024 * 1024
MIN_EXPIRY, MAX_EXPIRY = 3600, 2592000


@router.post("/files")
async def create_file(request: Request) -> dict[str, Any]:
    form = await request.form()
    upload = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise bad_request(
            "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    if not isinstance(purpose, str) or not purpose:
        raise bad_request(
            "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
        )
    if purpose not in UPLOAD_PURPOSES:
        raise bad_request(
            f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'",
            param="purpose",
            code="invalid_value",
        )
    filename = upload.filename or "upload"
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise bad_request(
            f"Invalid file format for Fine-Tuning API. Must be .jsonl (got '{filename}').",
            param="file",
            code="invalid_file_format",
        )
    content = await upload.read()
    if len(content) > MAX_FILE_BYTES:
        raise bad_request("File is too large; the maximum size is 512 MB.", param="file")
    expires_after = _expires_after(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"))
    return store_of(request).add_file(filename, purpose, content, expires_after)


def _expires_after(anchor: Any, seconds: Any) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise bad_request("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
    try:
        value = int(str(seconds))
    except ValueError:
        raise bad_request(
            "expires_after[seconds] must be an integer.", param="expires_after.seconds"
        ) from None
    if not MIN_EXPIRY <= value <= MAX_EXPIRY:
        raise bad_request(
            f"expires_after[seconds] must be between {MIN_EXPIRY} and {MAX_EXPIRY}.",
            param="expires_after.seconds",
        )
    return value


@router.get("/files")
def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    return store_of(request).list_files(purpose, limit, order, after)


@router.get("/files/{file_id}")
def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    return store_of(request).get_file(file_id).to_dict()


@router.get("/files/{file_id}/content")
def file_content(request: Request, file_id: str) -> Response:
    stored = store_of(request).get_file(file_id)
    return Response(stored.content, media_type="application/octet-stream")


@router.delete("/files/{file_id}")
def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    return store_of(request).delete_file(file_id)
