"""The promotion gate: an alias change that brings in a new model may require a completed eval in
which that model beats every current target of the alias on one metric, by at least a margin.
Plugged into `shared.chat.aliases.put_alias` as a check; refused changes carry the numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared.chat import routing
from shared.chat.aliases import AliasChange, Check
from shared.errors import InvalidInput, InvalidState, NotFound
from shared.evals import metrics
from shared.evals.service import COMPLETED
from shared.evals.service import get as get_eval
from shared.models import Eval

PARAM = "require_eval"


@dataclass(frozen=True)
class Requirement:
    eval_id: str
    # "rouge_l" (on the eval's first tokenization: characters for Chinese, words for English),
    # "word.bleu_4", "char.rouge_l", "exact_match", or "judge.win_rate".
    metric: str = "rouge_l"
    # In points of the metric's 0-100 scale; the new model must also be strictly ahead.
    min_margin: float = 0.0


def check(requirement: Requirement) -> Check:
    def run(session: Session, change: AliasChange) -> None:
        enforce(session, change, requirement)

    return run


def enforce(session: Session, change: AliasChange, requirement: Requirement) -> None:
    try:
        row = get_eval(session, project_id=change.project_id, eval_id=requirement.eval_id)
    except NotFound as exc:
        raise NotFound(exc.message, code=exc.code, param=f"{PARAM}.eval_id") from None
    if row.status != COMPLETED:
        raise InvalidState(
            f"Eval {row.id} is {row.status}; a promotion can only rely on a completed eval.",
            code="eval_not_completed",
            param=f"{PARAM}.eval_id",
        )
    current = [t["model"] for t in (change.before.targets if change.before else [])]
    incoming = [t["model"] for t in change.targets if t["model"] not in current]
    for candidate in incoming:
        mine = _score(session, change.project_id, row, candidate, requirement.metric)
        for incumbent in current:
            theirs = _score(session, change.project_id, row, incumbent, requirement.metric)
            margin = mine["value"] - theirs["value"]
            if margin <= 0 or margin < requirement.min_margin:
                raise InvalidState(
                    f"{candidate} does not beat {incumbent} on {requirement.metric} in eval {row.id}: "
                    f"{mine['value']:.2f} vs {theirs['value']:.2f} (margin {margin:+.2f}, required "
                    f"more than 0 and at least {requirement.min_margin:g}). The alias was not changed.",
                    code="eval_gate_failed",
                    param=PARAM,
                    details={
                        "gate": {
                            "eval_id": row.id,
                            "metric": requirement.metric,
                            "min_margin": requirement.min_margin,
                            "margin": margin,
                            "candidate": {"model": candidate, **mine},
                            "current": {"model": incumbent, **theirs},
                        }
                    },
                )


def _score(session: Session, project_id: str, row: Eval, model: str, metric: str) -> dict[str, Any]:
    """The eval's {value, ci_low, ci_high} of `metric` for the eval model that is `model`."""
    name = _eval_model(session, project_id, row, model)
    if metric == "judge.win_rate":
        return _win_rate(row, name, model)
    block = (row.metrics or {}).get("models", {}).get(name) or {}
    language = (row.metrics or {}).get("language", "en")
    tokenization, _, score = metric.rpartition(".")
    if metric == "exact_match":
        found = block.get("exact_match")
    elif score in (*metrics.ITEM_SCORES, *metrics.CORPUS_SCORES) and tokenization in ("", "char", "word"):
        found = (block.get(tokenization or metrics.TOKENIZATIONS[language][0]) or {}).get(score)
    else:
        choices = [
            *metrics.ITEM_SCORES,
            *metrics.CORPUS_SCORES,
            "word.bleu_4",
            "exact_match",
            "judge.win_rate",
        ]
        raise InvalidInput(
            f"Unknown metric {metric!r}; use one of {choices} (optionally prefixed char. or word.).",
            code="invalid_metric",
            param=f"{PARAM}.metric",
        )
    if found is None:
        raise InvalidInput(
            f"Eval {row.id} has no {metric} for {model} "
            f"({language} evals are scored on {metrics.TOKENIZATIONS[language]}).",
            code="invalid_metric",
            param=f"{PARAM}.metric",
        )
    return {"value": found["value"], "ci_low": found["ci_low"], "ci_high": found["ci_high"]}


def _win_rate(row: Eval, name: str, model: str) -> dict[str, Any]:
    """The judge's win rate (ties count half) against the eval's first model; the first model
    itself scores 50 against itself."""
    judged = (row.metrics or {}).get("judge")
    if not judged:
        raise InvalidInput(f"Eval {row.id} had no judge.", code="invalid_metric", param=f"{PARAM}.metric")
    if name == row.models[0]["model"]:
        return {"value": 50.0, "ci_low": None, "ci_high": None}
    pair = next(p for p in judged["pairs"] if p["model"] == name)
    return {"value": pair["win_rate"] or 0.0, "ci_low": None, "ci_high": None}


def _eval_model(session: Session, project_id: str, row: Eval, model: str) -> str:
    """The eval's name for the model an alias target names (matched on provider and upstream
    model, so `tune_…`, its `ft:` name and a base alias such as gpt-4o-mini all match)."""
    route = routing.resolve_target(session, project_id=project_id, model=model)
    for entry in row.models:
        if (entry["provider"], entry["upstream_model"]) == (route.provider.name, route.upstream_model):
            return str(entry["model"])
    raise InvalidInput(
        f"Eval {row.id} did not evaluate {model} (it compared {[m['model'] for m in row.models]}); "
        "run an eval with both the new and the current model.",
        code="eval_missing_model",
        param=f"{PARAM}.eval_id",
    )
