"""What a retune does once it succeeds: point an alias at it — at once, or only after it wins
an eval against the alias's current targets (the promotion gate of `shared/evals/gate.py`).

With a gate, success starts an eval (current targets vs the new tune, on the tune's dataset)
and the scheduler's `continue_waiting` applies the gate when that eval completes. Either way
the outcome is recorded on the tune (`on_success.moved`, and an event saying why not)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.chat import aliases
from shared.errors import DomainError, NotFound
from shared.models import Eval, Tune
from shared.tunes import states
from shared.tunes.transitions import record

WAITING = "waiting_eval"
GATE_DEFAULTS = {"metric": "rouge_l", "min_margin": 0.0, "max_items": 50, "split": "validation"}


def after_success(session: Session, tune: Tune) -> None:
    plan = dict(tune.on_success or {})
    if not plan.get("alias") or plan.get("state"):
        return
    gate = plan.get("require_eval")
    if not gate:
        _move(session, tune, plan, checks=())
        return
    try:
        current = aliases.get_alias(session, project_id=tune.project_id, name=plan["alias"])
    except NotFound:
        _move(session, tune, plan, checks=())  # a new alias: nothing to beat
        return
    settings = {**GATE_DEFAULTS, **(gate if isinstance(gate, dict) else {})}
    models = list(dict.fromkeys([t["model"] for t in current.targets if t["model"] != tune.id]))
    try:
        row = _start_eval(session, tune, models, settings)
    except DomainError as exc:
        _refused(session, tune, plan, exc)
        return
    record(session, tune, "message", f"Eval {row.id} decides whether alias {plan['alias']!r} moves here.")
    tune.on_success = {**plan, "state": WAITING, "eval_id": row.id, "gate": settings}


def continue_waiting(session: Session, *, limit: int = 50) -> list[str]:
    """Apply the gate for every waiting retune whose eval has finished; returns those settled."""
    stmt = (
        select(Tune)
        .where(
            Tune.retune_of.is_not(None),
            Tune.status == states.SUCCEEDED,
            Tune.on_success["state"].as_string() == WAITING,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    settled = []
    for tune in session.scalars(stmt):
        plan = dict(tune.on_success or {})
        row = session.get(Eval, plan.get("eval_id"))
        if row is not None and row.status in ("queued", "running"):
            continue
        if row is None or row.status != "completed":
            _refused(session, tune, plan, DomainError("the eval did not complete", code="eval_failed"))
        else:
            from shared.evals import gate  # the evals package imports the chat and tunes layers

            requirement = gate.Requirement(
                eval_id=row.id, metric=plan["gate"]["metric"], min_margin=float(plan["gate"]["min_margin"])
            )
            _move(session, tune, plan, checks=(gate.check(requirement),))
        settled.append(tune.id)
    session.flush()
    return settled


_last = 0.0


def continue_waiting_every(session: Session, *, interval_seconds: float = 5.0) -> list[str]:
    global _last
    if _last and time.monotonic() - _last < interval_seconds:
        return []
    _last = time.monotonic()
    return continue_waiting(session)


def _start_eval(session: Session, tune: Tune, models: list[str], settings: dict[str, Any]) -> Eval:
    from shared.evals import service as evals

    options = evals.EvalOptions(split=str(settings["split"]), max_items=int(settings["max_items"]))
    return evals.create(
        session,
        project_id=tune.project_id,
        dataset_id=tune.dataset_id,
        models=[*models, tune.id],
        options=options,
    )


def _move(session: Session, tune: Tune, plan: dict[str, Any], *, checks: Any) -> None:
    alias = plan["alias"]
    try:
        aliases.put_alias(
            session, project_id=tune.project_id, name=alias, targets=[{"model": tune.id}], checks=checks
        )
    except DomainError as exc:
        _refused(session, tune, plan, exc)
        return
    record(session, tune, "message", f"Alias {alias!r} now points at this tune.")
    tune.on_success = {**plan, "state": "done", "moved": True}


def _refused(session: Session, tune: Tune, plan: dict[str, Any], exc: DomainError) -> None:
    record(session, tune, "message", f"Alias {plan['alias']!r} was not moved to this tune: {exc.message}")
    tune.on_success = {**plan, "state": "done", "moved": False, "reason": exc.code}
