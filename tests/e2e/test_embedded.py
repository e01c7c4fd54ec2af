"""The README's first command: `tuneforge up` with nothing configured (SQLite, a serverless
Celery broker, local blobs, the sandbox) runs the same first story."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.story import run_first_story
from tests.support.procs import Proc, free_port, wait_for, wait_http


def test_first_story_on_embedded_defaults(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    # Only what a fresh machine has: no database, broker or blob settings at all.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    data_dir = tmp_path / "tuneforge-data"
    api_port = free_port()
    env.update(
        TUNEFORGE_DATA_DIR=str(data_dir),
        TUNEFORGE_ENV_FILE=str(tmp_path / "absent.env"),
        TUNEFORGE_SANDBOX_PORT=str(free_port()),
        # Test speed and a loopback receiver are the only differences from a user's first run.
        TUNEFORGE_SANDBOX_TIME_SCALE="0.01",
        TUNEFORGE_POLL_INTERVAL_SECONDS="0.3",
        TUNEFORGE_SCHEDULER_INTERVAL_SECONDS="0.5",
        TUNEFORGE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    up = Proc("up", ["up", "--port", str(api_port)], env, tmp_path, inherit=False)
    try:
        wait_http(f"http://127.0.0.1:{api_port}/readyz", up, timeout=90)
        key_file = wait_for(
            lambda: (data_dir / "admin-key").exists() and data_dir / "admin-key", 30, what="admin key"
        )
        run_first_story(f"http://127.0.0.1:{api_port}", key_file.read_text().strip(), receiver)
        assert (data_dir / "tuneforge.db").exists() and (data_dir / "broker.db").exists()
    except Exception:
        print(up.tail(200))
        raise
    finally:
        up.stop(sig_timeout=30)
    assert up.popen.returncode == 0, up.tail()
