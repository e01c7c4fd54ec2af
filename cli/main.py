"""`tuneforge up | migrate | api | worker | beat | sandbox | keys create` (DESIGN.md §12)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared.config import get_settings


def _migrate(_: argparse.Namespace) -> None:
    from shared.migrate import upgrade_head

    upgrade_head()


def _api(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level="info",
        access_log=False,  # api/access_log.py writes it, chat requests only when asked
        # One process runs Python on one core; more processes share the port. Each keeps its
        # own caches; limits and alias changes are shared through Redis (README, Chat gateway).
        workers=getattr(args, "workers", None) or settings.api_workers,
    )


def _sandbox(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    if args.flavor:
        settings.sandbox_flavor = args.flavor  # the factory below reads it from the settings
    uvicorn.run(
        "sandbox.app:create_app",
        factory=True,
        host=args.host or settings.sandbox_host,
        port=args.port or settings.sandbox_port,
        log_level="warning",
    )


def _trainer(args: argparse.Namespace) -> None:
    import uvicorn

    try:
        from trainer.server import create_trainer_app
    except ImportError as exc:
        raise SystemExit(f"tuneforge trainer needs: pip install 'tuneforge[trainer]' ({exc})") from None
    settings = get_settings()
    app = create_trainer_app(
        args.base_model,
        args.data_dir or settings.data_dir / "trainer",
        learning_rate=args.learning_rate,
        lora_rank=args.lora_rank,
        max_tokens=args.max_tokens,
        threads=args.threads,
    )
    uvicorn.run(app, host=args.host or settings.sandbox_host, port=args.port or 8002, log_level="warning")


def _worker(args: argparse.Namespace) -> None:
    """`--queue default` (prefork): datasets, tunes and the sweep. `--queue webhooks` (threads):
    deliveries only, which spend their time waiting on receivers, so many threads are cheap and a
    slow receiver never takes a slot that dataset or tune work needs. `--queue all` (the default,
    for a single-worker deployment): both queues on one prefork pool, without that isolation."""
    from shared import queue
    from worker.app import app

    settings = get_settings()
    webhooks = args.queue == "webhooks"
    queues = {
        "default": [settings.celery_queue],
        "webhooks": [queue.webhook_queue(settings)],
        "all": [settings.celery_queue, queue.webhook_queue(settings)],
    }
    concurrency = args.concurrency or (settings.webhook_worker_concurrency if webhooks else 2)
    argv = [
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        f"--queues={','.join(queues[args.queue])}",
        f"--pool={args.pool or ('threads' if webhooks else 'prefork')}",
        f"--hostname={args.queue}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)


def _beat(_: argparse.Namespace) -> None:
    from worker.app import app

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    app.start(["beat", "--loglevel=INFO"])


def _keys_create(args: argparse.Namespace) -> None:
    from shared import auth
    from shared.db import session_scope

    with session_scope() as session:
        project = auth.get_or_create_project(session, args.project)
        key = auth.create_key(
            session,
            project=project,
            name=args.name,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
        )
    print(key)


def _up(args: argparse.Namespace) -> None:
    """Embedded default: every process as a child, all stopped together."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(args)
    key_file = settings.data_dir / "admin-key"
    if not key_file.exists():
        from shared import auth
        from shared.db import session_scope

        with session_scope() as session:
            project = auth.get_or_create_project(session, "default")
            key_file.write_text(auth.create_key(session, project=project, name="admin") + "\n")
        key_file.chmod(0o600)
    me = [sys.executable, "-m", "cli.main"]
    commands = [
        me + ["api", "--port", str(args.port)],
        me + ["worker", "--queue", "default"],
        me + ["worker", "--queue", "webhooks"],
        me + ["beat"],
    ]
    if settings.uses_sandbox:
        commands.append(me + ["sandbox"])
    children = [subprocess.Popen(cmd) for cmd in commands]
    print(f"Tuneforge is up: http://{settings.api_host}:{args.port}/v1", flush=True)
    print(f"Admin API key (also in {key_file}): {key_file.read_text().strip()}", flush=True)
    if settings.uses_sandbox:
        print(
            f"Provider: the bundled sandbox at {settings.sandbox_base_url} (no OpenAI key configured)",
            flush=True,
        )

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for child in children:
            if child.poll() is not None:
                print(
                    f"a Tuneforge process exited ({' '.join(child.args[3:])}, code {child.returncode}); "
                    "stopping",
                    flush=True,
                )
                stop()
        time.sleep(0.5)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneforge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="migrate, then run api, workers, scheduler and sandbox")
    up.add_argument("--port", type=int, default=get_settings().api_port)
    up.set_defaults(func=_up)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)
    for name, func in (("api", _api), ("sandbox", _sandbox)):
        cmd = sub.add_parser(name, help=f"run the {name} HTTP server")
        cmd.add_argument("--host")
        cmd.add_argument("--port", type=int)
        cmd.set_defaults(func=func)
        if name == "api":
            cmd.add_argument("--workers", type=int, help="API processes (default TUNEFORGE_API_WORKERS, 1)")
        if name == "sandbox":
            cmd.add_argument(
                "--flavor",
                choices=("openai", "azure"),
                help="answer like OpenAI (/v1) or like an Azure OpenAI resource (/openai, api-key)",
            )
    trainer = sub.add_parser(
        "trainer", help="run the self-hosted trainer: LoRA fine-tuning behind the OpenAI-compatible API"
    )
    trainer.add_argument("--host")
    trainer.add_argument("--port", type=int, help="default: 8002")
    trainer.add_argument(
        "--base-model",
        action="append",
        required=True,
        metavar="NAME=PATH_OR_HUB_ID",
        help="a base model to tune and serve, repeatable (several names for one path: aliases)",
    )
    trainer.add_argument("--data-dir", type=Path, help="files, jobs, adapters (default: <data_dir>/trainer)")
    trainer.add_argument("--learning-rate", type=float, default=2e-4, help="× learning_rate_multiplier")
    trainer.add_argument("--lora-rank", type=int, default=16)
    trainer.add_argument("--max-tokens", type=int, default=1024, help="tokens per training example")
    trainer.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    trainer.set_defaults(func=_trainer)
    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument(
        "--queue",
        choices=("all", "default", "webhooks"),
        default="all",
        help="default: datasets, tunes, sweep (prefork); webhooks: deliveries (threads); all: both",
    )
    worker.add_argument("--concurrency", type=int, help="default: 2, or 16 threads for webhooks")
    worker.add_argument("--pool", choices=("prefork", "threads", "solo"))
    worker.set_defaults(func=_worker)
    sub.add_parser("beat", help="run the scheduler (one instance)").set_defaults(func=_beat)
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a project key and print it")
    create.add_argument("--project", required=True)
    create.add_argument("--name")
    create.add_argument("--rpm", type=int, help="chat requests per minute for this key (default: unlimited)")
    create.add_argument("--tpm", type=int, help="chat tokens per minute for this key (default: unlimited)")
    create.set_defaults(func=_keys_create)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
