"""The eval task: ids as arguments, safe to run twice (outputs already stored are skipped), bounded
retries, and an attempt cap for a worker that keeps dying on the same eval."""

from __future__ import annotations

import logging

from shared import attempts, queue
from shared.db import session_scope
from shared.evals import runner
from shared.queue import TaskName

log = logging.getLogger(__name__)
app = queue.get_celery()


@app.task(
    name=TaskName.RUN_EVAL.value,
    autoretry_for=runner.TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=3,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Many provider calls: longer than the other tasks, below the broker's one-hour visibility
    # timeout (a message still running then would be handed out again). Past it, the sweep resumes.
    soft_time_limit=3000,
    time_limit=3300,
)
def run_eval(eval_id: str) -> None:
    key = f"eval:{eval_id}"
    with session_scope() as session:
        started = attempts.start(session, key)
    if started > attempts.MAX_ATTEMPTS:
        log.error("%s: the worker died %d times running it; giving up", key, started - 1)
        with session_scope() as session:
            runner.give_up(session, eval_id, started - 1)
            attempts.finish(session, key)
        return
    try:
        _run(eval_id)
    finally:
        # Every way out but a dead process; a kill leaves the count for the cap to see.
        with session_scope() as session:
            attempts.finish(session, key)


def _run(eval_id: str) -> None:
    with session_scope() as session:
        if not runner.start(session, eval_id):
            return
    # Twice at most: the models' answers, then the judge's calls that compare them.
    for _ in range(2):
        with session_scope() as session:
            calls, concurrency = runner.plan(session, eval_id)
        for result in runner.execute(calls, concurrency):
            # One commit per output: a kill loses only the calls in flight.
            with session_scope() as session:
                runner.record(session, eval_id, result)
    with session_scope() as session:
        runner.finish(session, eval_id)
