"""The tune state machine: ours before submission, the provider's job status after it."""

from __future__ import annotations

CREATED = "created"
UPLOADING = "uploading"
SUBMITTED = "submitted"
VALIDATING_FILES = "validating_files"
QUEUED = "queued"
RUNNING = "running"
PAUSED = "paused"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
PAUSABLE = frozenset({VALIDATING_FILES, QUEUED, RUNNING})
PROVIDER_STATUSES = frozenset({VALIDATING_FILES, QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED})
# The statuses a client hears about by webhook (DESIGN.md §12 event types).
ANNOUNCED = frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED})
