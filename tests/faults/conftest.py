"""The fault stack: sandbox, api, worker and beat against a throwaway Postgres cluster and Redis
server of their own (tests/support/services.py), so tests may kill, restart and wipe any of them.

The ordinary session `stack` (tests/conftest.py) is untouched: under tests/faults/ the name
`stack` means this fault stack instead, healed before and after every test (stores up, a live
worker, no fault rules). The settings are the suite's (already in os.environ) with the stores
swapped and the recovery timings made small, so a lost message or a dead worker is noticed in
seconds, not minutes. TUNEFORGE_FAULTS_KEEP_LOGS=1 keeps the process logs after the run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import (
    LEASE_SECONDS,
    PROVIDER_MAX_FAILURES,
    PROVIDER_TIMEOUT_SECONDS,
    STALE_AFTER_SECONDS,
    FaultStack,
    HoldingReceiver,
    start_holding_receiver,
)
from tests.support.paths import REPO
from tests.support.procs import Proc, free_port, wait_http
from tests.support.services import PostgresCluster, RedisServer, make_root, record_pid


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    root = make_root("tuneforge-faults-")
    pg: PostgresCluster | None = None
    redis = RedisServer(root / "redis")
    procs: dict[str, Proc] = {}
    stack: FaultStack | None = None
    try:
        pg = PostgresCluster(root / "pg")
        pg.start()
        redis.start()
        database_url = pg.create_database("tuneforge")
        sandbox_port, api_port = free_port(), free_port()
        env = {
            "TUNEFORGE_DATABASE_URL": database_url,
            "TUNEFORGE_BROKER_URL": redis.url,
            "TUNEFORGE_CELERY_QUEUE": f"tuneforge-faults-{uuid.uuid4().hex[:8]}",
            "TUNEFORGE_DATA_DIR": str(root / "data"),
            "TUNEFORGE_BLOB_DIR": str(root / "blobs"),
            "TUNEFORGE_SANDBOX_PORT": str(sandbox_port),
            "TUNEFORGE_LEASE_SECONDS": str(LEASE_SECONDS),
            "TUNEFORGE_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS),
            "TUNEFORGE_PROVIDER_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT_SECONDS),
            "TUNEFORGE_PROVIDER_MAX_FAILURES": str(PROVIDER_MAX_FAILURES),
        }
        subprocess.run(
            [sys.executable, "-m", "cli.main", "migrate"],
            cwd=REPO,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            timeout=120,
        )
        log_dir = log_dir_of(root)
        log_dir.mkdir()
        procs["sandbox"] = Proc("sandbox", ["sandbox", "--port", str(sandbox_port)], env, log_dir)
        procs["api"] = Proc("api", ["api", "--port", str(api_port)], env, log_dir)
        procs["beat"] = Proc("beat", ["beat"], env, log_dir)
        for name, proc in procs.items():
            record_pid(root, name, proc.popen.pid)
        stack = FaultStack(
            api_url=f"http://127.0.0.1:{api_port}",
            sandbox_url=f"http://127.0.0.1:{sandbox_port}",
            env=env,
            log_dir=log_dir,
            procs=procs,
            postgres=pg,
            redis=redis,
        )
        stack.start_worker()
        wait_http(f"{stack.sandbox_url}/healthz", procs["sandbox"])
        wait_http(f"{stack.api_url}/healthz", procs["api"])
        yield stack
    finally:
        if stack is not None:
            stack.dispose()
        for proc in procs.values():
            _stop_group(proc)
        redis.close()
        if pg is not None:
            pg.close()
        if os.environ.get("TUNEFORGE_FAULTS_KEEP_LOGS"):
            print(f"fault stack logs kept in {log_dir_of(root)}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def log_dir_of(root: Path) -> Path:
    return root / "logs"


def _stop_group(proc: Proc) -> None:
    pid = proc.popen.pid
    proc.stop(sig_timeout=10)
    # Prefork children outlive a main process that was killed: the whole group goes.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def stack(fault_stack: FaultStack, request: pytest.FixtureRequest) -> Iterator[FaultStack]:
    """The fault stack, put back together after each test: stores up, a live worker, no rules."""
    fault_stack.heal()
    yield fault_stack
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(fault_stack.logs())
    fault_stack.heal()


@pytest.fixture
def hooks() -> Iterator[HoldingReceiver]:
    receiver, server = start_holding_receiver()
    yield receiver
    receiver.release_all()
    server.shutdown()
    server.server_close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
