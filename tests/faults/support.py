"""Helpers for fault tests: the stack handle (processes, stores, the sandbox's fault control plane,
the database), a webhook receiver that can hold requests open, and the end-of-test audit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from shared import auth
from shared.models import TaskAttempt, Tune, WebhookDelivery
from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.paths import HUATUO
from tests.support.procs import Proc, wait_for
from tests.support.services import PostgresCluster, RedisServer, record_pid

# The fault stack's recovery timings (seconds): small, so a lost message or a dead worker is
# noticed in seconds. Kill tests hold provider calls for less than the stale-after time, so a call
# cut short by a kill has finished at the provider before the sweep starts that work again.
LEASE_SECONDS = 4
STALE_AFTER_SECONDS = 5
PROVIDER_TIMEOUT_SECONDS = 5
PROVIDER_MAX_FAILURES = 3

METADATA_KEY = "tuneforge_tune_id"
ANNOUNCED = ("running", "succeeded", "failed", "cancelled")


# ---- webhook receiver --------------------------------------------------------------------------


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class HoldingReceiver:
    """Records every delivery; the next `hold` requests get no answer until `release_all()` (or
    30 s), which is how a test keeps a delivery in flight long enough to kill its worker."""

    url: str = ""
    requests: list[Hook] = field(default_factory=list)
    hold: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    def release_all(self) -> None:
        self._release.set()

    def of_type(self, event_type: str, tune_id: str | None = None) -> list[Hook]:
        return [
            r
            for r in list(self.requests)
            if r.payload["type"] == event_type and (tune_id is None or r.payload["data"]["id"] == tune_id)
        ]


def start_holding_receiver() -> tuple[HoldingReceiver, ThreadingHTTPServer]:
    receiver = HoldingReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            hook = Hook({k.lower(): v for k, v in self.headers.items()}, body, time.time())
            with receiver._lock:
                receiver.requests.append(hook)
                held = receiver.hold > 0
                receiver.hold -= 1 if held else 0
            if held:
                receiver._release.wait(30)
            try:
                self.send_response(200)
                self.end_headers()
            except OSError:  # the sender died while we held it
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


# ---- the stack ----------------------------------------------------------------------------------


@dataclass
class FaultStack:
    api_url: str
    sandbox_url: str
    env: dict[str, str]
    log_dir: Path
    procs: dict[str, Proc]
    postgres: PostgresCluster
    redis: RedisServer
    workers_started: int = 0
    _engine: Engine | None = None

    # processes
    @property
    def worker(self) -> Proc:
        return self.procs["worker"]

    def start_worker(self) -> None:
        self.workers_started += 1
        name = "worker" if self.workers_started == 1 else f"worker-{self.workers_started}"
        self.procs["worker"] = Proc(name, ["worker", "--concurrency", "2"], self.env, self.log_dir)
        record_pid(self.log_dir.parent, name, self.procs["worker"].popen.pid)

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group: the main process and its prefork children."""
        pid = self.worker.popen.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.worker.popen.wait(timeout=30)
        self.worker.stop()  # closes its log
        # A child can outlive its parent for a moment; it must not hold a task when we go on.
        wait_for(lambda: not _group_alive(pid), 10, interval=0.05, what="the worker's children to exit")

    def heal(self) -> None:
        """Undo what a test may have left broken: stores down, the worker dead, fault rules."""
        if not self.postgres.running():
            self.postgres.start()
        if not self.redis.running():
            self.redis.start()
        if not self.worker.alive():
            self.start_worker()
        self.clear_faults()

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # the sandbox's control plane
    def sandbox(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox_url, timeout=10)

    def add_faults(self, *rules: dict[str, Any]) -> list[str]:
        with self.sandbox() as http:
            response = http.post("/sandbox/faults", json=list(rules))
        assert response.status_code == 200, response.text
        return [rule["id"] for rule in response.json()["data"]]

    def rule(self, rule_id: str) -> dict[str, Any]:
        with self.sandbox() as http:
            rules = http.get("/sandbox/faults").json()["data"]
        return next(r for r in rules if r["id"] == rule_id)

    def clear_faults(self) -> None:
        with self.sandbox() as http:
            http.delete("/sandbox/faults").raise_for_status()

    def request_log(self) -> list[dict[str, Any]]:
        with self.sandbox() as http:
            return list(http.get("/sandbox/requests").json()["data"])

    def provider_jobs(self, tune_id: str) -> list[dict[str, Any]]:
        """The provider's jobs carrying this tune's id (asked through the API every client uses)."""
        with self.sandbox() as http:
            response = http.get(
                "/v1/fine_tuning/jobs",
                params={f"metadata[{METADATA_KEY}]": tune_id, "limit": 100},
                headers={"Authorization": "Bearer sk-test"},
            )
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    def jobs_created_for(self, tune_id: str) -> int:
        with self.sandbox() as http:
            stats = http.get("/sandbox/stats").json()
        return int(stats["jobs"]["by_metadata"].get(f"{METADATA_KEY}={tune_id}", 0))

    # the database (the stack's own, not the suite's)
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = self.env["TUNEFORGE_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
            self._engine = create_engine(url, pool_pre_ping=True, pool_size=2)
        return self._engine

    @contextmanager
    def db(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    def new_key(self) -> str:
        with self.db() as session:
            project = auth.get_or_create_project(session, f"faults-{os.urandom(6).hex()}")
            return auth.create_key(session, project=project)

    def deliveries_done(self, tune_id: str) -> list[Any] | None:
        """The tune's outbox rows once none is pending any more (None while one is)."""
        with self.db() as session:
            stmt = select(WebhookDelivery).where(WebhookDelivery.payload.contains(f'"id":"{tune_id}"'))
            rows = list(session.scalars(stmt))
        return rows if rows and all(row.status != "pending" for row in rows) else None

    def tune_row(self, tune_id: str) -> Tune:
        with self.db() as session:
            tune = session.get(Tune, tune_id)
        assert tune is not None
        return tune

    def attempts(self, like: str) -> dict[str, int]:
        """Attempt counts left by tasks that started and have not returned (dead or running)."""
        with self.db() as session:
            rows = session.execute(
                select(TaskAttempt.key, TaskAttempt.attempts).where(TaskAttempt.key.like(like))
            )
            return {key: count for key, count in rows}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ---- a tenant with a webhook endpoint and a dataset ----------------------------------------------

TUNE_EVENTS = ["tune.running", "tune.succeeded", "tune.failed", "tune.cancelled"]


def set_up(stack: FaultStack, hooks: HoldingReceiver, seed: str) -> tuple[httpx.Client, str, dict[str, Any]]:
    """A fresh project whose tune events go to `hooks`, and a ready 12-example dataset; returns
    the API client, the endpoint's signing secret and the dataset."""
    http = client(stack.api_url, stack.new_key())
    endpoint = http.post("/v1/webhook-endpoints", json={"url": hooks.url, "events": TUNE_EVENTS})
    assert endpoint.status_code == 201, endpoint.text
    upload = upload_dataset(http, HUATUO, preset="huatuo", sample_size="12", seed=seed)
    dataset = wait_dataset(http, upload["id"])
    assert dataset["status"] == "ready", dataset
    return http, endpoint.json()["secret"], dataset


def start_tune(
    http: httpx.Client,
    dataset_id: str,
    base_model: str = "gpt-4o-mini",
    metadata: dict[str, str] | None = None,
) -> str:
    body: dict[str, Any] = {"dataset_id": dataset_id, "base_model": base_model}
    if metadata:
        body["metadata"] = metadata
    response = http.post("/v1/tunes", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# ---- waiting and killing ------------------------------------------------------------------------


def kill_during(stack: FaultStack, rule_id: str, attempt_key: str, *, fired: int = 1) -> None:
    """Once the sandbox holds the `fired`-th request matched by `rule_id`, SIGKILL the worker
    (whole process group), check the task really died mid-flight, and start a fresh worker."""
    wait_for(lambda: stack.rule(rule_id)["fired"] >= fired, 60, interval=0.05, what=f"{rule_id} to fire")
    stack.kill_worker()
    # A task that returned would have cleared its count: one left behind proves it died running.
    assert stack.attempts(attempt_key), f"no task {attempt_key} was in flight when the worker was killed"
    stack.start_worker()


# ---- the audit ----------------------------------------------------------------------------------


def audit_tune(
    stack: FaultStack,
    http: httpx.Client,
    tune_id: str,
    receiver: HoldingReceiver,
    secret: str,
    *,
    status: str,
    jobs: int = 1,
) -> dict[str, Any]:
    """What every fault test ends with, for one tune:

    - it is terminal with `status`;
    - the provider has exactly `jobs` (one, or none for a tune failed before submission) jobs
      carrying its id, and that one is the tune's `provider_job_id`;
    - each status it announced (its status events) was delivered at least once, every delivery of
      one status carries one `webhook-id`, no status was announced twice, and every request
      verifies with `standardwebhooks` under the endpoint's secret;
    - a tune that succeeded has its loss curve and checkpoints;
    - no attempt count is left behind (every task that started for it returned in the end)."""
    tune = http.get(f"/v1/tunes/{tune_id}").json()
    assert tune["status"] == status, tune

    stack.clear_faults()
    found = stack.provider_jobs(tune_id)
    assert stack.jobs_created_for(tune_id) == len(found) == jobs, found
    assert [job["id"] for job in found] == ([tune["provider_job_id"]] if jobs else [])

    events = http.get(f"/v1/tunes/{tune_id}/events").json()["data"]
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    announced = [s for s in statuses if s in ANNOUNCED]
    assert len(announced) == len(set(announced)), f"a status was entered twice: {statuses}"
    assert announced and announced[-1] == status, statuses

    wanted = {f"tune.{s}" for s in announced}
    rows = wait_for(
        lambda: stack.deliveries_done(tune_id), 60, what=f"deliveries of {sorted(wanted)} to finish"
    )
    assert {row.event_type for row in rows} == wanted and {row.status for row in rows} == {"delivered"}, rows
    verifier = Webhook(secret)
    for event_type in sorted(wanted):
        hooks = receiver.of_type(event_type, tune_id)
        ids = {h.headers["webhook-id"] for h in hooks}
        assert len(ids) == 1, f"{event_type} went out as {len(ids)} different events: {sorted(ids)}"
        for hook in hooks:
            payload = verifier.verify(hook.body, hook.headers)
            assert payload["id"] == hook.headers["webhook-id"] and payload["type"] == event_type
    others = {r.payload["type"] for r in receiver.requests if r.payload["data"]["id"] == tune_id} - wanted
    assert not others, f"announced without a status change: {others}"

    if status == "succeeded":
        # The loss curve and checkpoints were copied in, however the job was found.
        assert len(http.get(f"/v1/tunes/{tune_id}/metrics").json()["data"]) >= 2
        assert http.get(f"/v1/tunes/{tune_id}/checkpoints").json()["data"]
    wait_for(lambda: not stack.attempts(f"%{tune_id}%"), 30, what="the tune's attempt counts to clear")
    return tune
