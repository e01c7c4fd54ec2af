"""The public shape of a tune, shared by the API and webhook payloads."""

from __future__ import annotations

from typing import Any

from shared.models import Tune, unix


def tune_dict(tune: Tune) -> dict[str, Any]:
    return {
        "id": tune.id,
        "object": "tune",
        "status": tune.status,
        "dataset_id": tune.dataset_id,
        "base_model": tune.base_model,
        "provider": tune.provider,
        "deployment": tune.deployment,
        "retune_of": tune.retune_of,
        "on_success": tune.on_success,
        "n_epochs": tune.n_epochs,
        "suffix": tune.suffix,
        "metadata": tune.user_metadata,
        "quote": tune.quote,
        "provider_file_id": tune.provider_file_id,
        "provider_job_id": tune.provider_job_id,
        "fine_tuned_model": tune.fine_tuned_model,
        "trained_tokens": tune.trained_tokens,
        "error": {"code": tune.error_code, "message": tune.error_message} if tune.error_code else None,
        "cancel_requested": tune.cancel_requested,
        "created_at": unix(tune.created_at),
        "started_at": unix(tune.started_at),
        "finished_at": unix(tune.finished_at),
    }
