"""Session-wide harness: a throwaway Postgres database with migrations applied, a unique Redis
queue, and (for end-to-end tests) the real processes: sandbox, api, worker and scheduler.

Tests isolate by project: each test creates its own project and key, which is exactly the
isolation the product guarantees between tenants."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.paths import TIKTOKEN_DIR
from tests.support.procs import Proc, free_port, wait_http
from tests.support.receiver import Receiver, start_receiver

ADMIN_URL = os.environ.get("TUNEFORGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TUNEFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
DB_NAME = f"tuneforge_test_{RUN_ID}"
WORK_DIR = Path(tempfile.mkdtemp(prefix="tuneforge-test-"))
SANDBOX_PORT = free_port()
# A listener that must never be reached: hostile webhook URLs point at it (tests/e2e/test_ssrf.py).
CANARY_PORT = free_port()

# The test process and every child it starts read the same settings.
TEST_ENV = {
    "TUNEFORGE_DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME,
    "TUNEFORGE_BROKER_URL": REDIS_URL,
    "TUNEFORGE_CELERY_QUEUE": f"tuneforge-test-{RUN_ID}",
    "TUNEFORGE_DATA_DIR": str(WORK_DIR / "data"),
    "TUNEFORGE_BLOB_DIR": str(WORK_DIR / "blobs"),
    "TUNEFORGE_SECRET_KEY": "test-secret-" + RUN_ID,
    "TUNEFORGE_SANDBOX_PORT": str(SANDBOX_PORT),
    "TUNEFORGE_SANDBOX_TIME_SCALE": "0.01",
    # Only the literal 127.0.0.1 (the local receivers): `localhost` must stay a hostile name.
    "TUNEFORGE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    # Provider accounts in tests point at local sandboxes (tests/e2e/test_providers.py).
    "TUNEFORGE_PROVIDER_ALLOWED_HOSTS": "127.0.0.1",
    # The canary's port passes the port rule, so only the address checks stand in the way.
    "TUNEFORGE_WEBHOOK_ALLOWED_PORTS": f"80,443,{CANARY_PORT}",
    "TUNEFORGE_OPENAI_WEBHOOK_SECRET": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
    "TUNEFORGE_WEBHOOK_RETRY_SCHEDULE": "[0.5, 1, 2]",
    "TUNEFORGE_POLL_INTERVAL_SECONDS": "0.3",
    "TUNEFORGE_SCHEDULER_INTERVAL_SECONDS": "0.5",
    # Small enough that the gzip-bomb upload test is quick; far above any legitimate test file.
    "TUNEFORGE_DATASET_MAX_DECOMPRESSED_BYTES": str(64 * 1024 * 1024),
    "TIKTOKEN_CACHE_DIR": str(TIKTOKEN_DIR),
    # The reference tokenizer for every process of the run, whatever the developer's shell says.
    # The optional fast one (quicktok, installed by the test extra) is covered by tests that ask
    # for it by name and compare it with tiktoken (tests/shared/test_fast_tokenizer.py,
    # test_tokens_parallel.py).
    "TUNEFORGE_TOKENIZER": "tiktoken",
    # A developer's .env (say, with a real OpenAI key) must never reach the test run.
    "TUNEFORGE_ENV_FILE": str(WORK_DIR / "absent.env"),
}
os.environ.update(TEST_ENV)
for name in ("TUNEFORGE_OPENAI_API_KEY", "TUNEFORGE_OPENAI_BASE_URL"):
    os.environ.pop(name, None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run's files (blobs, process logs) go when it passed; a failed run keeps them to read."""
    if exitstatus == 0:
        shutil.rmtree(WORK_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    from shared.migrate import upgrade_head

    upgrade_head()
    yield TEST_ENV["TUNEFORGE_DATABASE_URL"]
    from shared.db import get_engine

    get_engine().dispose()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


@dataclass
class Stack:
    api_url: str
    sandbox_url: str
    procs: dict[str, Proc]

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())


@pytest.fixture(scope="session")
def stack(database: str) -> Iterator[Stack]:
    log_dir = WORK_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    procs = {
        "sandbox": Proc("sandbox", ["sandbox", "--port", str(SANDBOX_PORT)], TEST_ENV, log_dir),
        "api": Proc("api", ["api", "--port", str(api_port)], TEST_ENV, log_dir),
        "worker": Proc("worker", ["worker", "--queue", "default", "--concurrency", "2"], TEST_ENV, log_dir),
        "webhooks": Proc(
            "webhooks", ["worker", "--queue", "webhooks", "--concurrency", "8"], TEST_ENV, log_dir
        ),
        "beat": Proc("beat", ["beat"], TEST_ENV, log_dir),
    }
    try:
        wait_http(f"http://127.0.0.1:{SANDBOX_PORT}/healthz", procs["sandbox"])
        wait_http(f"http://127.0.0.1:{api_port}/healthz", procs["api"])
        yield Stack(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{SANDBOX_PORT}", procs)
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture
def make_key(database: str):  # type: ignore[no-untyped-def]
    """Create a fresh project and return its API key: one tenant per test."""
    from shared import auth
    from shared.db import session_scope

    def make(project: str | None = None, **limits: int) -> str:
        with session_scope() as session:
            proj = auth.get_or_create_project(session, project or f"test-{uuid.uuid4().hex[:12]}")
            return auth.create_key(session, project=proj, **limits)

    return make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver; at teardown every request it got must have verified with both
    `standardwebhooks` and the `openai` SDK under a secret the test registered."""
    rec, server = start_receiver()
    yield rec
    server.shutdown()
    failures = rec.verification_failures()
    assert not failures, "webhook deliveries that do not verify:\n" + "\n".join(failures)
