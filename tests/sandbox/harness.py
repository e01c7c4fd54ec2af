"""Helpers shared by the sandbox tests: kit data, training files, polling."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from openai import OpenAI

from tests.support.paths import HUATUO, TIKTOKEN_DIR
from tests.support.procs import free_port

# tiktoken must find the kit's offline cache before the sandbox first counts tokens.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))

TIME_SCALE = 0.01  # a job takes well under a second of wall time
SYSTEM_PROMPT = "你是一名经验丰富的医生，请回答患者的问题。"
TERMINAL = ("succeeded", "failed", "cancelled")
AUTH = {"Authorization": "Bearer sk-test"}


@dataclass
class Sandbox:
    base_url: str  # ends in /v1
    root_url: str


@contextmanager
def serve(app: Any) -> Iterator[Sandbox]:
    """Run an ASGI app under a real uvicorn server (a thread, a free port) for the block."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sandbox server did not start")
        time.sleep(0.02)
    try:
        yield Sandbox(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def huatuo_rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    with HUATUO.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[offset : offset + n]


def to_example(row: dict[str, str]) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": row["questions"]},
            {"role": "assistant", "content": row["answers"]},
        ]
    }


def jsonl(examples: list[Any]) -> bytes:
    return ("\n".join(json.dumps(e, ensure_ascii=False) for e in examples) + "\n").encode()


def upload(client: OpenAI, content: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, content), purpose="fine-tune").id


def wait_for(client: OpenAI, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 15) -> Any:
    """Poll a job until its status is one of `statuses`; returns the job and the statuses seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in statuses:
            job.seen_statuses = seen  # type: ignore[attr-defined]
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job.status} (seen {seen})")
        time.sleep(0.01)


@dataclass
class TrainedJob:
    job: Any
    rows: list[dict[str, str]]
    training_bytes: bytes
    seen_statuses: list[str]
