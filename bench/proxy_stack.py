"""The processes bench/proxy.py measures: the bench virtualenvs, process groups, Tuneforge's API
on a throwaway database, and LiteLLM's proxy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from support import create_database, drop_database, free_port, out

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".bench-venvs"
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"
# Separate virtualenvs, so nothing here can change the pinned dependencies Tuneforge runs with:
# uvicorn picks uvloop/httptools whenever they are importable, so they must stay out of .venv.
TOOLS_PINS = [
    "uvloop==0.23.0",
    "httptools==0.9.0",
    "aiohttp==3.14.5",
    "uvicorn==0.54.0",
    "httpx==0.28.1",
    "orjson==3.13.0",
    "py-spy==0.4.3",
]
LITELLM_PINS = ["litellm[proxy]==1.108.7"]
ADMIN_URL = os.environ.get("TUNEFORGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TUNEFORGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def ensure_venv(name: str, pins: list[str]) -> Path:
    """The venv's python, created and installed on first use (or when the pins change)."""
    path = VENVS / name
    marker = path / "bench-pins.txt"
    python = path / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text() == "\n".join(pins):
        return python
    out(f"installing {', '.join(pins)} into {path.relative_to(REPO)} (once)…")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    marker.write_text("\n".join(pins))
    return python


class Proc:
    """A child in a session of its own, so it and every worker it forks stop together and its
    CPU time can be summed over the whole group."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process in this child's session."""
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the command: state ppid pgrp session … utime(12th) stime(13th).
            if int(fields[3]) == self.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()
        except ProcessLookupError:
            pass


def wait_http(url: str, proc: Proc, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.monotonic() - start
        except urllib.error.HTTPError:
            return time.monotonic() - start  # answering at all is up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:.0f} s\n{proc.tail()}")


def http_json(method: str, url: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class Tuneforge:
    """`tuneforge api` on a throwaway database, with per-key limits on (set far above the load, so
    every request goes through the limiter and none is refused) and the fake upstream as its
    provider (the sandbox provider, whose base URL is TUNEFORGE_OPENAI_BASE_URL)."""

    PROJECT = "bench-proxy"

    def __init__(self, upstream_base: str, work: Path, workers: int = 1) -> None:
        self.workers = workers
        run = uuid.uuid4().hex[:10]
        self.db_name = f"tuneforge_bench_proxy_{run}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TUNEFORGE_") or k.startswith("TUNEFORGE_BENCH_")
        }
        self.env.update(
            {
                "TUNEFORGE_DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name,
                "TUNEFORGE_BROKER_URL": REDIS_URL,
                "TUNEFORGE_REDIS_URL": REDIS_URL,
                "TUNEFORGE_CELERY_QUEUE": f"tuneforge-bench-proxy-{run}",
                "TUNEFORGE_DATA_DIR": str(work / "data"),
                "TUNEFORGE_BLOB_DIR": str(work / "blobs"),
                "TUNEFORGE_SECRET_KEY": "bench-secret-" + run,
                "TUNEFORGE_OPENAI_BASE_URL": upstream_base,
                "TUNEFORGE_CHAT_REQUESTS_PER_MINUTE": str(10**9),
                "TUNEFORGE_CHAT_TOKENS_PER_MINUTE": str(10**12),
                "TUNEFORGE_ENV_FILE": str(work / "absent.env"),
                "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken"),
            }
        )
        self.work = work
        self.key = ""
        self.model = "gpt-4o-mini"
        self.alias_note = ""
        self.procs: list[Proc] = []
        self.url = ""

    def start(self, log_dir: Path) -> None:
        create_database(ADMIN_URL, self.db_name)
        cli = [str(MAIN_PYTHON), "-m", "cli.main"]
        subprocess.run([*cli, "migrate"], cwd=REPO, env=self.env, check=True, capture_output=True)
        created = subprocess.run(
            [*cli, "keys", "create", "--project", self.PROJECT, "--name", "bench"],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [*cli, "api", "--port", str(port), "--workers", str(self.workers)]
        api = Proc("tuneforge-api", command, log_dir, self.env)
        self.procs.append(api)
        # Usage batches may be handed to Celery; a worker drains them as a deployment would.
        self.procs.append(Proc("tuneforge-worker", [*cli, "worker", "--concurrency", "1"], log_dir, self.env))
        wait_http(self.url + "/healthz", api, 60)
        self.alias_note = self._alias()

    @property
    def api(self) -> Proc:
        return self.procs[0]

    def _alias(self) -> str:
        """Call through an alias when the API has them; the base model otherwise."""
        name = "bench-chat"
        last: tuple[int, Any] = (0, None)
        for body in (
            {"targets": [{"model": "gpt-4o-mini", "weight": 100}]},
            {"model": "gpt-4o-mini"},
            {"target": "gpt-4o-mini"},
        ):
            last = http_json("PUT", f"{self.url}/v1/aliases/{name}", self.key, body)
            if last[0] in (200, 201):
                self.model = name
                return f"alias `{name}` -> gpt-4o-mini"
            if last[0] in (404, 405) and "aliases" not in json.dumps(last[1]):
                break  # no such route yet
        return f"base model gpt-4o-mini (PUT /v1/aliases answered {last[0]}: no aliases yet)"

    def usage(self) -> tuple[int, Any]:
        return http_json("GET", f"{self.url}/v1/usage", self.key)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        try:
            drop_database(ADMIN_URL, self.db_name)
        except Exception as exc:  # a failed drop must not hide the results
            out(f"could not drop {self.db_name}: {exc}")


LITELLM_KEY = "sk-litellm-bench-master"


def litellm_config(upstream_base: str) -> str:
    # The production settings of LiteLLM's docs (proxy/prod): no debug output, JSON logs, a request
    # timeout, master-key auth; spend and error logs off since there is no database to write them.
    return f"""model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream_base}
      api_key: sk-bench
litellm_settings:
  set_verbose: false
  json_logs: true
  request_timeout: 600
general_settings:
  master_key: {LITELLM_KEY}
  disable_spend_logs: true
  disable_error_logs: true
"""


def start_litellm(
    python: Path, upstream_base: str, work: Path, log_dir: Path, workers: int
) -> tuple[Proc, str]:
    config = work / "litellm.yaml"
    config.write_text(litellm_config(upstream_base))
    port = free_port()
    env = dict(os.environ)
    # LITELLM_LOG=ERROR: the docs' "turn off FastAPI's default info logs"; the local cost map
    # avoids a fetch at start-up that cannot succeed here.
    env.update({"LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True"})
    argv = [
        str(python.parent / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    proc = Proc("litellm", argv, log_dir, env)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, 180)
    return proc, f"http://127.0.0.1:{port}"
