"""What a retune does once it succeeds: point an alias at it, optionally only if it won an eval.

The eval gate is a hook: `gates` holds the checks a promotion must pass (each raises a
DomainError to refuse). Until evals can gate (issue 7), a retune asked to `require_eval`
waits for a gate to be registered and records why it did not move the alias."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from shared.chat import aliases
from shared.errors import DomainError
from shared.models import Tune
from shared.tunes.transitions import record

Gate = Callable[[Session, Tune], None]
gates: list[Gate] = []


def after_success(session: Session, tune: Tune) -> None:
    plan = tune.on_success or {}
    alias = plan.get("alias")
    if not alias or plan.get("done"):
        return
    try:
        if plan.get("require_eval"):
            if not gates:
                raise DomainError(
                    "an eval gate was asked for, and none is available in this deployment",
                    code="eval_gate_unavailable",
                )
            for gate in gates:
                gate(session, tune)
        aliases.put_alias(session, project_id=tune.project_id, name=alias, targets=[{"model": tune.id}])
    except DomainError as exc:
        record(session, tune, "message", f"Alias {alias!r} was not moved to this tune: {exc.message}")
        tune.on_success = {**plan, "done": True, "moved": False, "reason": exc.code}
        return
    record(session, tune, "message", f"Alias {alias!r} now points at this tune.")
    tune.on_success = {**plan, "done": True, "moved": True}
