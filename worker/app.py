"""The Celery entry point: `celery -A worker.app worker` (or `tuneforge worker`)."""

from __future__ import annotations

from celery.signals import worker_process_init

from shared import logs
from shared.db import dispose_after_fork
from shared.queue import get_celery

logs.configure()
app = get_celery()

import worker.eval_tasks  # noqa: E402,F401 - registers the tasks on `app`
import worker.tasks  # noqa: E402,F401


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    dispose_after_fork()
