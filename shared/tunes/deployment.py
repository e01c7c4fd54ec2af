"""The step between "trained" and "serving" at providers that need one (Azure OpenAI deploys a
tuned model before it answers chat). The tune stays `running` until the deployment is ready,
so `tune.succeeded` always means "you can chat with it now"."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.models import Tune
from shared.providers import adapters
from shared.providers.base import Provider
from shared.tunes.transitions import fail, record


class Unavailable(Exception):
    """The deployment could not be checked now; counted and retried like a failed poll."""


def ready(session: Session, tune: Tune, provider: Provider, job: Any) -> bool:
    """True when the succeeded job's model can serve; otherwise starts or checks the deployment
    (idempotent) and returns False, failing the tune if the provider refuses it."""
    if not adapters.needs_deployment(provider) or not job.fine_tuned_model:
        return True
    name = tune.deployment or adapters.deployment_name(tune.id)
    try:
        state = adapters.deploy(provider, deployment=name, model=job.fine_tuned_model)
    except adapters.DeploymentUnavailable as exc:
        raise Unavailable(f"deploying {job.fine_tuned_model}: {exc}") from None
    except adapters.DeploymentRefused as exc:
        tune.fine_tuned_model = job.fine_tuned_model
        fail(
            session,
            tune,
            "deployment_failed",
            f"Training succeeded ({job.fine_tuned_model}) but the provider refused to deploy it as "
            f"{name!r}: {exc}. Fix the provider's deployment settings (PATCH /v1/providers), then "
            "retune or deploy it yourself.",
        )
        return False
    if tune.deployment is None:
        tune.deployment = name
        record(session, tune, "message", f"Deploying {job.fine_tuned_model} as {name!r}.")
    if state.failed:
        fail(session, tune, "deployment_failed", f"The provider could not deploy {name!r} ({state.state}).")
        return False
    return state.ready
