"""Throwaway Postgres and Redis servers for fault tests.

Each server gets its own data folder under a temp directory and a free port on 127.0.0.1, so a
test can restart, kill or wipe it without disturbing the shared services the other tests use.
Only the processes started here are ever signalled, by their own pids.

Postgres comes from the machine's packages (`/usr/lib/postgresql/15/bin`, another installed
version, or TUNEFORGE_TEST_PG_BIN); `initdb` and `postgres` refuse to run as root, so as root they run as
the `postgres` OS user (`runuser -u postgres --`). Redis is `redis-server` as a child process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.procs import free_port, wait_for


def _pg_bin() -> Path:
    """TUNEFORGE_TEST_PG_BIN, else Debian's 15, else the newest installed major version."""
    if configured := os.environ.get("TUNEFORGE_TEST_PG_BIN"):
        return Path(configured)
    preferred = Path("/usr/lib/postgresql/15/bin")
    if preferred.exists():
        return preferred
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else preferred


PG_BIN = _pg_bin()
REDIS_SERVER = os.environ.get("TUNEFORGE_TEST_REDIS_SERVER", "redis-server")
PG_USER = "postgres"
OWNER_FILE = "owner.pid"
PIDS_DIR = "pids"


def make_root(prefix: str) -> Path:
    """A fresh temp folder for one run's servers and processes. Folders that earlier runs left
    behind when they died without their finalizers (a hard timeout, say) are reaped first."""
    reap_abandoned(prefix)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    return root


def record_pid(root: Path, name: str, pid: int, mark: str | None = None) -> None:
    """Note a process started for `root`, so a later run can stop it if this one cannot. `mark`
    is text its command line or environment carries (by default: the path of `root`)."""
    (root / PIDS_DIR).mkdir(exist_ok=True)
    (root / PIDS_DIR / f"{name}.pid").write_text(f"{pid}\n{mark or root}")


def reap_abandoned(prefix: str) -> None:
    """Stop what a dead run left under its own folder, then remove the folder. A process is only
    signalled if its command line or environment still carries the mark it was recorded with,
    so a reused pid is left alone."""
    for root in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        owner = _read_pid(root / OWNER_FILE)
        if owner is None or _pid_alive(owner):
            continue
        for pid_file in root.glob(f"**/{PIDS_DIR}/*.pid"):
            pid, _, mark = pid_file.read_text().partition("\n")
            if pid.isdigit() and mark and _mentions(int(pid), mark):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)
        for data in root.glob("*/data"):
            if (data / "postmaster.pid").exists():
                stop = [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
                subprocess.run(stop, capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mentions(pid: int, text: str) -> bool:
    for part in ("cmdline", "environ"):
        try:
            if text.encode() in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
        except OSError:
            continue
    return False


def _as_postgres() -> list[str]:
    return ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=PG_USER)
        # mkdtemp makes 0700 folders: the postgres user must at least be able to pass through.
        for parent in path.parents:
            if parent == Path(parent.anchor) or parent.stat().st_mode & 0o001:
                break
            parent.chmod(parent.stat().st_mode | 0o011)


class PostgresCluster:
    """A private cluster (`initdb` + `pg_ctl`) with trust auth on 127.0.0.1:<free port>."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(root)
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # fsync off: a killed server loses nothing the OS already has, and tests never crash the OS.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            PG_BIN / "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        wait_for(self.accepts, 30, interval=0.1, what="postgres to accept connections")

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back open transactions and disconnects; `immediate` is a crash."""
        if self.running():
            self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        self.stop(mode)
        if down_for:
            time.sleep(down_for)  # the outage itself, not a wait for anything
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _run(self, *args: object) -> None:
        cmd = [*_as_postgres(), *map(str, args)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)


class RedisServer:
    """`redis-server` without persistence as a child process; `stop(save=True)` keeps its data
    across a restart (SHUTDOWN SAVE writes dump.rdb, which the next start loads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dump = root / "dump.rdb"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert not self.running(), "redis is already running"
        self.starts += 1
        log = (self.root / f"redis-{self.starts}.log").open("wb")
        self.popen = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.root),
                "--dbfilename",
                self.dump.name,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        # redis-server rewrites its command line to "redis-server 127.0.0.1:<port>".
        record_pid(self.root, "redis", self.popen.pid, mark=f"127.0.0.1:{self.port}")
        wait_for(self.accepts, 30, interval=0.05, what="redis to accept connections")

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def accepts(self) -> bool:
        return self.command("PING") == "+PONG"

    def command(self, *words: str) -> str | None:
        """One inline command; the first line of the answer, or None when nobody answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall((" ".join(words) + "\r\n").encode())
                return conn.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
        except OSError:
            return None

    def stop(self, *, save: bool) -> None:
        """A graceful shutdown; with `save` the data comes back on the next start."""
        if not self.running():
            return
        self.command("SHUTDOWN", "SAVE" if save else "NOSAVE")
        self._reap(timeout=30)

    def kill(self, *, wipe: bool = True) -> None:
        """SIGKILL (the data in memory is gone); `wipe` also deletes any saved dump."""
        if self.running():
            assert self.popen is not None
            os.killpg(self.popen.pid, signal.SIGKILL)
            self._reap(timeout=30)
        if wipe:
            self.dump.unlink(missing_ok=True)

    def close(self) -> None:
        self.kill(wipe=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _reap(self, timeout: float) -> None:
        assert self.popen is not None
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
