"""Aliases: stable model names frontends call, pointing at one target or a weighted split.

Every change is a new version with its own `ChatAliasVersion` row, so any earlier state can be
restored by `rollback` (which is itself a new version: history only grows). Targets are always
concrete models (tune id, `ft:` name or base model), never other aliases, so a request resolves
in one step. Each write bumps the project's resolution generation once it commits, so every API
process routes by the new state from its very next request (shared/chat/lookups.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.chat import lookups, routing
from shared.errors import Conflict, DomainError, InvalidInput, InvalidState, NotFound
from shared.ids import new_id
from shared.models import ChatAlias, ChatAliasVersion, Tune, unix
from shared.tunes import states

# Letters, digits, '.', '_' and '-': safe in a URL path segment and unlike every other kind of
# model name (`ft:` names have colons, tune ids are refused by prefix below).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_TARGETS = 10
MAX_WEIGHT = 1_000_000


@dataclass(frozen=True)
class AliasChange:
    """A write about to happen, as the checks passed to `put_alias`/`rollback` see it.

    This is the extension point for gates on promotion (issue 7: "moving traffic to this tune
    needs a passing eval"): a check raises a DomainError to refuse the change; it runs after the
    input is validated and before anything is written."""

    project_id: str
    name: str
    before: ChatAlias | None
    targets: list[dict[str, Any]]
    log_requests: bool
    key_id: str | None
    action: str  # "put" | "rollback"


Check = Callable[[Session, AliasChange], None]


def put_alias(
    session: Session,
    *,
    project_id: str,
    name: str,
    targets: Sequence[dict[str, Any]],
    log_requests: bool | None = None,
    key_id: str | None = None,
    checks: Sequence[Check] = (),
) -> ChatAlias:
    """Create the alias or change it (a new version). `log_requests=None` keeps the current
    setting (off for a new alias), so switching the target never silently stops logging.

    A PUT of the state the alias already has writes nothing: repeating a request is harmless."""
    _check_name(name)
    alias = _find(session, project_id, name, for_update=True)
    normalized = validate_targets(session, project_id=project_id, alias_name=name, targets=targets)
    logging_on = log_requests if log_requests is not None else bool(alias and alias.log_requests)
    change = AliasChange(project_id, name, alias, normalized, logging_on, key_id, "put")
    for check in checks:
        check(session, change)
    return _write(session, change)


def rollback(
    session: Session,
    *,
    project_id: str,
    name: str,
    version: int | None = None,
    key_id: str | None = None,
    checks: Sequence[Check] = (),
) -> ChatAlias:
    """Restore the targets and logging of `version` (default: the one before the current) as a
    new version. The old targets are validated again: a tune may have gone away since."""
    alias = get_alias(session, project_id=project_id, name=name, for_update=True)
    wanted = alias.version - 1 if version is None else version
    if version is None and wanted < 1:
        raise InvalidState(
            f"Alias {name!r} has only version 1; there is nothing to roll back to.",
            code="no_previous_version",
            param="version",
        )
    if wanted == alias.version:
        raise InvalidState(
            f"Alias {name!r} is already at version {wanted}. Name an earlier version "
            f"(GET /v1/aliases/{name}/versions lists them).",
            code="already_current_version",
            param="version",
        )
    old = session.scalar(
        select(ChatAliasVersion).where(
            ChatAliasVersion.alias_id == alias.id, ChatAliasVersion.version == wanted
        )
    )
    if old is None:
        raise NotFound(
            f"Alias {name!r} has no version {wanted} (current: {alias.version}).",
            code="alias_version_not_found",
            param="version",
        )
    normalized = validate_targets(session, project_id=project_id, alias_name=name, targets=old.targets)
    change = AliasChange(project_id, name, alias, normalized, old.log_requests, key_id, "rollback")
    for check in checks:
        check(session, change)
    return _write(session, change)


def get_alias(session: Session, *, project_id: str, name: str, for_update: bool = False) -> ChatAlias:
    alias = _find(session, project_id, name, for_update=for_update)
    if alias is None:
        raise NotFound(
            f"No alias {name!r} in this project. Create it with PUT /v1/aliases/{name}.",
            code="alias_not_found",
            param="name",
        )
    return alias


def list_aliases(session: Session, *, project_id: str) -> list[ChatAlias]:
    return list(
        session.scalars(select(ChatAlias).where(ChatAlias.project_id == project_id).order_by(ChatAlias.name))
    )


def history(
    session: Session, *, project_id: str, name: str, limit: int = 100, before: int | None = None
) -> tuple[list[ChatAliasVersion], bool]:
    """Versions newest first; `before` pages on from a version number."""
    alias = get_alias(session, project_id=project_id, name=name)
    stmt = (
        select(ChatAliasVersion)
        .where(ChatAliasVersion.alias_id == alias.id)
        .order_by(ChatAliasVersion.version.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(ChatAliasVersion.version < before)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def delete_alias(session: Session, *, project_id: str, name: str) -> ChatAlias:
    """Remove the alias and its history; requests naming it get model_not_found from then on
    (or reach the base model of that name, which the alias had shadowed)."""
    alias = get_alias(session, project_id=project_id, name=name, for_update=True)
    session.execute(delete(ChatAliasVersion).where(ChatAliasVersion.alias_id == alias.id))
    session.delete(alias)
    session.flush()
    lookups.invalidate_after_commit(session, project_id)
    return alias


def validate_targets(
    session: Session, *, project_id: str, alias_name: str, targets: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Targets as stored: `[{"model", "weight"}]`, each resolvable now, no model twice."""
    if not isinstance(targets, (list, tuple)) or not targets:
        raise InvalidInput(
            "An alias needs a target: send 'model', or 'targets' with 1 to "
            f"{MAX_TARGETS} entries of {{'model', 'weight'}}.",
            code="missing_targets",
            param="targets",
        )
    if len(targets) > MAX_TARGETS:
        raise InvalidInput(
            f"An alias can split traffic across at most {MAX_TARGETS} targets; got {len(targets)}.",
            code="too_many_targets",
            param="targets",
        )
    other_aliases = set(
        session.scalars(
            select(ChatAlias.name).where(ChatAlias.project_id == project_id, ChatAlias.name != alias_name)
        )
    )
    normalized: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for index, target in enumerate(targets):
        param = f"targets[{index}]"
        model = target.get("model") if isinstance(target, dict) else None
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput(
                f"{param} needs a 'model': a tune id, a fine-tuned model name or a base model.",
                code="invalid_target",
                param=f"{param}.model",
            )
        model = model.strip()
        weight = _weight(target.get("weight"), single=len(targets) == 1, param=f"{param}.weight")
        if model in other_aliases:
            raise InvalidInput(
                f"{param} names the alias {model!r}; an alias points at models, not at other "
                "aliases. Name that alias's model directly.",
                code="target_is_alias",
                param=f"{param}.model",
            )
        route = _resolve(session, project_id, model, param=f"{param}.model")
        served = (route.provider.name, route.upstream_model)
        if served in seen:
            raise InvalidInput(
                f"{param} ({model!r}) is the same model as {seen[served]!r}; list each model once "
                "and give it the combined weight.",
                code="duplicate_target",
                param=f"{param}.model",
            )
        seen[served] = model
        normalized.append({"model": model, "weight": weight})
    return normalized


def alias_dict(alias: ChatAlias, versions: Sequence[ChatAliasVersion] | None = None) -> dict[str, Any]:
    total = sum(int(t.get("weight", 1)) for t in alias.targets) or 1
    body: dict[str, Any] = {
        "id": alias.id,
        "object": "alias",
        "name": alias.name,
        "version": alias.version,
        "targets": [
            {"model": t["model"], "weight": int(t.get("weight", 1)), "share": int(t.get("weight", 1)) / total}
            for t in alias.targets
        ],
        "log_requests": alias.log_requests,
        "created_at": unix(alias.created_at),
        "updated_at": unix(alias.updated_at),
    }
    if versions is not None:
        body["history"] = [version_dict(v, current=alias.version) for v in versions]
    return body


def version_dict(version: ChatAliasVersion, *, current: int | None = None) -> dict[str, Any]:
    return {
        "object": "alias.version",
        "version": version.version,
        "targets": version.targets,
        "log_requests": version.log_requests,
        "key_id": version.key_id,
        "current": version.version == current,
        "created_at": unix(version.created_at),
    }


def _write(session: Session, change: AliasChange) -> ChatAlias:
    alias = change.before
    if alias is not None and alias.targets == change.targets and alias.log_requests == change.log_requests:
        return alias
    if alias is None:
        alias = ChatAlias(
            id=new_id("alias"),
            project_id=change.project_id,
            name=change.name,
            version=1,
            targets=change.targets,
            log_requests=change.log_requests,
        )
        session.add(alias)
    else:
        alias.version += 1
        alias.targets = change.targets
        alias.log_requests = change.log_requests
    session.add(
        ChatAliasVersion(
            id=new_id("aliasv"),
            alias_id=alias.id,
            version=alias.version,
            targets=change.targets,
            log_requests=change.log_requests,
            key_id=change.key_id,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        # Another request created this name (or, where the database has no row locks, wrote
        # the same version) first. No savepoint to recover in: the caller rolls the unit of
        # work back on the error, and on SQLite releasing a savepoint would commit early.
        raise Conflict(
            f"Alias {change.name!r} was changed by another request at the same time; "
            "read it and retry your change.",
            code="alias_conflict",
            param="name",
        ) from None
    lookups.invalidate_after_commit(session, change.project_id)
    return alias


def _find(session: Session, project_id: str, name: str, *, for_update: bool) -> ChatAlias | None:
    stmt = select(ChatAlias).where(ChatAlias.project_id == project_id, ChatAlias.name == name)
    if for_update:
        # Serializes concurrent changes of one alias, so versions stay gapless and ordered.
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def _check_name(name: str) -> None:
    if name.startswith("ft:") or name.startswith("tune_"):
        raise InvalidInput(
            f"Alias name {name!r} looks like a fine-tuned model name or a tune id, which already "
            "mean something here. Pick a name such as 'support-bot'.",
            code="invalid_alias_name",
            param="name",
        )
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"Alias name {name!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            code="invalid_alias_name",
            param="name",
        )


def _weight(raw: Any, *, single: bool, param: str) -> int:
    if raw is None and single:
        return 1
    if raw is None:
        raise InvalidInput(
            f"{param} is required when an alias has several targets (e.g. 90 and 10).",
            code="missing_weight",
            param=param,
        )
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_WEIGHT:
        raise InvalidInput(
            f"{param} must be a whole number from 1 to {MAX_WEIGHT}; got {raw!r}. Weights are "
            "relative: 90 and 10 send 90% and 10% of the traffic.",
            code="invalid_weight",
            param=param,
        )
    return raw


def _resolve(session: Session, project_id: str, model: str, *, param: str) -> routing.Route:
    if model.startswith("tune_"):
        tune = session.get(Tune, model)
        if tune is not None and tune.project_id == project_id and tune.status != states.SUCCEEDED:
            raise InvalidInput(
                f"Tune {model} is {tune.status}; only a succeeded tune can take traffic.",
                code="target_not_ready",
                param=param,
            )
    try:
        return routing.resolve_target(session, project_id=project_id, model=model)
    except NotFound as exc:
        raise InvalidInput(f"{param}: {exc.message}", code="unknown_target", param=param) from None
    except DomainError as exc:
        exc.param = param
        raise
