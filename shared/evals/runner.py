"""Evals, worker side: sample the items, call the provider for every (item, model) pair that has no
stored output yet, then score and finish.

Resumable by construction: each output is its own row, committed when its call returns
(`record`), and `plan` only lists the pairs without one. A worker killed mid-eval loses the calls
in flight and nothing else; the next run (Celery's redelivery or the sweep's) does only the rest."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import openai
import orjson
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared import blobs, providers
from shared.chat import routing
from shared.errors import DomainError
from shared.evals import judge, report
from shared.evals.service import COMPLETED, FAILED, RUNNING, UNFINISHED, Generation, eval_dict
from shared.models import Dataset, Eval, EvalItem, EvalOutput, utcnow
from shared.webhooks import service as webhooks

# Errors worth another try later (the task retries, then the sweep); others are the prompt's own
# and are stored as that output's error.
TRANSIENT = (
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
)
# The SDK retries transient errors itself, with backoff and the provider's Retry-After.
SDK_RETRIES = 3


@dataclass(frozen=True)
class Call:
    position: int
    slot: str
    provider: providers.Provider
    model: str
    messages: list[dict[str, Any]]
    generation: dict[str, Any]


@dataclass(frozen=True)
class Result:
    position: int
    slot: str
    answer: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: dict[str, str] | None = None


def start(session: Session, eval_id: str) -> bool:
    """Mark the eval running and sample its items the first time; False when it is finished."""
    row = session.get(Eval, eval_id, with_for_update=True)
    if row is None or row.status not in UNFINISHED:
        return False
    if row.items_total is None:
        problem = _sample_items(session, row)
        if problem is not None:
            fail(session, row, *problem)
            return False
    row.status = RUNNING
    row.updated_at = utcnow()
    session.flush()
    return True


def _sample_items(session: Session, row: Eval) -> tuple[str, str] | None:
    """A seeded sample of `max_items` lines of the split, in two passes over the file (count, then
    read the chosen lines), so memory does not grow with the split."""
    dataset = session.get(Dataset, row.dataset_id)
    key = dataset and (dataset.validation_blob if row.split == "validation" else dataset.train_blob)
    if key is None:
        return "dataset_unavailable", f"Dataset {row.dataset_id} has no {row.split} file any more."
    with blobs.open_read(key) as handle:
        lines = sum(1 for line in handle if line.strip())
    # Read back in file order: the items keep the file's order whatever the seed drew.
    chosen = set(
        random.Random(row.options["seed"]).sample(range(lines), min(row.options["max_items"], lines))
    )
    system_prompt = Generation(**row.options["generation"]).system_prompt
    position = index = 0
    with blobs.open_read(key) as handle:
        for line in handle:
            if not line.strip():
                continue
            if index in chosen:
                # Prepared files always end with an assistant turn; a line that does not is skipped.
                example = _split_example(orjson.loads(line).get("messages") or [], system_prompt)
                if example is not None:
                    messages, question, reference = example
                    session.add(
                        EvalItem(
                            eval_id=row.id,
                            position=position,
                            messages=messages,
                            question=question,
                            reference=reference,
                        )
                    )
                    position += 1
            index += 1
    if not position:
        return "empty_split", f"The {row.split} split of {row.dataset_id} has no usable examples."
    row.items_total = position
    return None


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _split_example(
    messages: list[dict[str, Any]], system_prompt: str | None
) -> tuple[list[dict[str, Any]], str, str] | None:
    """The prompt (everything before the last assistant turn), its question and the reference."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None or last == 0:
        return None
    prompt = [{"role": m["role"], "content": m.get("content")} for m in messages[:last]]
    if system_prompt is not None:
        prompt = [{"role": "system", "content": system_prompt}] + [m for m in prompt if m["role"] != "system"]
    question = next((_text(m["content"]) for m in reversed(prompt) if m["role"] == "user"), "")
    return prompt, question, _text(messages[last].get("content"))


def plan(session: Session, eval_id: str) -> tuple[list[Call], int]:
    """Calls still to make, in item order, and the eval's concurrency. The judge's calls come
    once every model has answered the items they compare."""
    row = session.get(Eval, eval_id)
    if row is None or row.status != RUNNING:
        return [], 1
    judged = row.options.get("judge")
    try:
        # Each run asks where the models are served (a provider's key may have been rotated);
        # the models themselves were fixed when the eval was created.
        routes = [_provider(session, row, entry) for entry in row.models]
        judge_route = _provider(session, row, judged) if judged else None
    except DomainError as exc:
        fail(
            session,
            row,
            "model_unavailable",
            f"A model of this eval cannot be called any more: {exc.message}",
        )
        return [], 1
    items = list(
        session.scalars(select(EvalItem).where(EvalItem.eval_id == eval_id).order_by(EvalItem.position))
    )
    done: dict[tuple[int, str], EvalOutput] = {
        (o.position, o.slot): o
        for o in session.scalars(select(EvalOutput).where(EvalOutput.eval_id == eval_id))
    }
    generation = {k: v for k, v in row.options["generation"].items() if k != "system_prompt"}
    calls: list[Call] = []
    for item in items:
        for index, (entry, provider) in enumerate(zip(row.models, routes, strict=True)):
            if (item.position, str(index)) not in done:
                calls.append(
                    Call(
                        item.position,
                        str(index),
                        provider,
                        entry["upstream_model"],
                        item.messages,
                        generation,
                    )
                )
    if judged and judge_route is not None and not calls:
        answers = {key: out.answer for key, out in done.items() if not key[1].startswith("judge:")}
        for item in items:
            for slot, messages in judge.prompts(
                item.question, item.reference, answers, item.position, len(row.models)
            ):
                if (item.position, slot) not in done:
                    calls.append(
                        Call(
                            item.position,
                            slot,
                            judge_route,
                            judged["upstream_model"],
                            messages,
                            judge.GENERATION,
                        )
                    )
    return calls, max(1, int(row.options.get("concurrency", 4)))


def _provider(session: Session, row: Eval, entry: dict[str, Any]) -> providers.Provider:
    """The provider serving an eval model, resolved as the chat gateway resolves it."""
    concrete = entry.get("tune_id") or entry["upstream_model"]
    return routing.resolve_target(session, project_id=row.project_id, model=concrete).provider


def execute(calls: list[Call], concurrency: int) -> Iterator[Result]:
    """Run the calls `concurrency` at a time (threads: the work is waiting on the provider), yielding
    each result as it arrives. A transient error still failing after the SDK's retries stops the
    run (the calls already yielded are kept); the task retries later."""
    if not calls:
        return
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        futures = [pool.submit(_call, call) for call in calls]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _call(call: Call) -> Result:
    client = providers.client(call.provider).with_options(max_retries=SDK_RETRIES)
    settings = call.generation
    extra: dict[str, Any] = {}
    if settings.get("top_p") is not None:
        extra["top_p"] = settings["top_p"]
    if settings.get("seed") is not None:
        extra["seed"] = settings["seed"]
    try:
        response = client.chat.completions.create(
            model=call.model,
            messages=call.messages,  # type: ignore[arg-type]
            temperature=settings.get("temperature", 0.0),
            max_completion_tokens=settings.get("max_tokens", 512),
            **extra,
        )
    except TRANSIENT:
        raise
    except openai.APIStatusError as exc:
        # The provider refused this prompt (too long, filtered, model gone): retrying will not help.
        body = exc.body if isinstance(exc.body, dict) else {}
        code = str(body.get("code") or f"http_{exc.status_code}")
        message = str(body.get("message") or exc.message)[:500]
        return Result(call.position, call.slot, "", error={"code": code, "message": message})
    choice = response.choices[0] if response.choices else None
    usage = response.usage
    return Result(
        call.position,
        call.slot,
        (choice.message.content or "") if choice else "",
        finish_reason=choice.finish_reason if choice else None,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


def record(session: Session, eval_id: str, result: Result) -> None:
    """Store one output (a second writer of the same pair is ignored) and renew the eval's lease."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
    stmt = insert(EvalOutput).values(
        eval_id=eval_id,
        position=result.position,
        slot=result.slot,
        answer=result.answer,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        error=result.error,
        created_at=utcnow(),
    )
    session.execute(stmt.on_conflict_do_nothing())
    row = session.get(Eval, eval_id)
    if row is not None:
        row.updated_at = utcnow()
    session.flush()


def finish(session: Session, eval_id: str) -> bool:
    """Score every answer, aggregate per model and announce `eval.completed`; False when outputs
    are still missing (another run is making them) or the eval is already finished."""
    row = session.get(Eval, eval_id, with_for_update=True)
    if row is None or row.status != RUNNING:
        return False
    remaining, _ = plan(session, eval_id)
    if remaining or row.status != RUNNING:  # `plan` fails an eval whose model went away
        return False
    items = list(
        session.scalars(select(EvalItem).where(EvalItem.eval_id == eval_id).order_by(EvalItem.position))
    )
    outputs = {
        (o.position, o.slot): o
        for o in session.scalars(select(EvalOutput).where(EvalOutput.eval_id == eval_id))
    }
    row.metrics = report.score(row, items, outputs)
    row.status = COMPLETED
    row.completed_at = utcnow()
    session.flush()
    _announce(session, row)
    return True


def fail(session: Session, row: Eval, code: str, message: str) -> None:
    row.status = FAILED
    row.error_code, row.error_message = code, message
    row.completed_at = utcnow()
    session.flush()
    _announce(session, row)


def give_up(session: Session, eval_id: str, attempts: int) -> None:
    row = session.get(Eval, eval_id, with_for_update=True)
    if row is not None and row.status in UNFINISHED:
        fail(
            session,
            row,
            "worker_crashed",
            f"The worker running this eval died {attempts} times; its stored outputs are kept. "
            "Start a new eval, with a smaller max_items or concurrency.",
        )


def _announce(session: Session, row: Eval) -> None:
    """`eval.completed` for a failed eval too (its `status` and `error` say so): a client waiting
    for the event must not wait forever."""
    webhooks.emit(
        session,
        project_id=row.project_id,
        event_type="eval.completed",
        data=eval_dict(row, done=row.items_total),
        callback_url=row.webhook_url,
        callback_events=(row.webhook_events or {}).get("types"),
    )
