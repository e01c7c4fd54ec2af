"""The stored objects besides jobs: uploaded/result files and the fine-tuned models jobs produce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.catalog import ORG_ID, BaseModel
from sandbox.similarity import AnswerIndex


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    expires_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": "file",
            "id": self.id,
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        return body


@dataclass
class TunedModel:
    id: str
    created: int
    job_id: str
    base: BaseModel
    index: AnswerIndex

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": ORG_ID,
            "shutdown_date": self.base.shutdown_date,
        }
