"""Webhook delivery benchmark: deliveries per second to a local receiver, and the time from a
status change's commit to its delivery arriving (p50/p99).

    .venv/bin/python bench/webhooks.py [--events 5000] [--latency-events 1000] [--rate 100]

It starts a throwaway stack: its own Postgres database (127.0.0.1:5432, user `postgres`, trust),
its own Celery queue names on the local Redis, and the real processes (`python -m cli.main
worker`, `worker --queue webhooks`, `beat`), plus a small asyncio HTTP receiver in a process of
its own that answers 200 at once and records when each `webhook-id` arrived. Then:

1. throughput: `--events` events emitted through the domain (`shared.webhooks.outbox.emit`, in
   transactions of `--batch` events, which enqueue after commit) as fast as they commit; reports
   deliveries per second from the first commit to the last arrival;
2. latency: `--latency-events` events, one transaction each (a status change), at `--rate` per
   second; reports the time from each commit to its arrival.

Every event goes to `--endpoints` endpoints of one project, all on the one receiver (at
`/hooks/N`); each delivery, an event at one endpoint, is counted and timed. The database is
dropped and the processes stopped at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from support import create_database, database_url, drop_database, free_port, out  # noqa: E402


def receiver_main(port: int) -> None:
    """Answers every POST with 204 at once and records `webhook-id path` (one delivery: an event
    at one endpoint) -> first arrival time; `GET /` returns the record as JSON."""
    arrivals: dict[str, float] = {}
    posts = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                if lines[0].startswith("POST"):
                    posts += 1
                    path = lines[0].split(" ")[1]
                    arrivals.setdefault(headers.get("webhook-id", "") + " " + path, now)
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                else:
                    body = json.dumps({"posts": posts, "arrivals": arrivals}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def received(port: int) -> tuple[int, dict[str, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
        data = json.loads(response.read())
    return data["posts"], data["arrivals"]


def wait_received(port: int, ids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        _, arrivals = received(port)
        if ids <= arrivals.keys() or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.25)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=5000, help="events for the throughput run")
    parser.add_argument("--batch", type=int, default=100, help="events per transaction (throughput run)")
    parser.add_argument("--latency-events", type=int, default=1000, help="events for the latency run")
    parser.add_argument("--rate", type=float, default=100.0, help="status changes per second (latency run)")
    parser.add_argument("--endpoints", type=int, default=1, help="endpoints (all on the one receiver)")
    parser.add_argument("--threads", type=int, default=16, help="threads in the webhooks worker")
    parser.add_argument("--webhook-workers", type=int, default=1, help="webhooks worker processes")
    parser.add_argument("--endpoint-concurrency", type=int, default=None, help="per-endpoint cap")
    return parser.parse_args()


def main() -> None:
    args = parse()
    run = uuid.uuid4().hex[:8]
    name = f"tuneforge_bench_wh_{run}"
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-wh-"))
    port = free_port()
    env = {
        "TUNEFORGE_DATABASE_URL": database_url(args.admin_url, name),
        "TUNEFORGE_BROKER_URL": args.redis_url,
        "TUNEFORGE_CELERY_QUEUE": f"tuneforge-bench-{run}",
        "TUNEFORGE_DATA_DIR": str(work / "data"),
        "TUNEFORGE_BLOB_DIR": str(work / "blobs"),
        "TUNEFORGE_SECRET_KEY": "bench-" + run,
        "TUNEFORGE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "TUNEFORGE_WEBHOOK_ALLOWED_PORTS": str(port),
        "TUNEFORGE_WEBHOOK_WORKER_CONCURRENCY": str(args.threads),
        "TUNEFORGE_ENV_FILE": str(work / "absent.env"),
        "TUNEFORGE_OPENAI_API_KEY": "sk-bench-unused",
    }
    if args.endpoint_concurrency:
        env["TUNEFORGE_WEBHOOK_ENDPOINT_CONCURRENCY"] = str(args.endpoint_concurrency)
    os.environ.update(env)

    from shared.db import get_engine, session_scope
    from shared.migrate import upgrade_head

    create_database(args.admin_url, name)
    receiver = multiprocessing.get_context("spawn").Process(target=receiver_main, args=(port,), daemon=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade_head()
        receiver.start()
        me = [sys.executable, "-m", "cli.main"]
        logs = (work / "logs").open("wb")
        commands = [me + ["worker", "--queue", "default"], me + ["beat"]]
        commands += [me + ["worker", "--queue", "webhooks"]] * args.webhook_workers
        for cmd in commands:
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=logs, stderr=subprocess.STDOUT))

        from sqlalchemy.orm import Session

        from shared import auth, queue
        from shared.webhooks import outbox
        from shared.webhooks.endpoints import create_endpoint

        with session_scope() as session:
            project_id = auth.get_or_create_project(session, f"bench-{run}").id
            for n in range(args.endpoints):
                create_endpoint(
                    session, project_id=project_id, url=f"http://127.0.0.1:{port}/hooks/{n}", events=None
                )

        def deliveries(event_ids: set[str]) -> dict[str, str]:
            """Delivery key (as the receiver records it) -> its event id."""
            return {f"{e} /hooks/{n}": e for e in event_ids for n in range(args.endpoints)}

        def emit(session: Session, index: int) -> str:
            return outbox.emit(
                session,
                project_id=project_id,
                event_type="tune.running",
                data={"id": f"ft_{index}", "status": "running", "sequence": index},
            )

        # Warm up: the workers have started and connected once the first delivery arrives.
        with session_scope() as session:
            warm = set(deliveries({emit(session, -1)}))
        if warm - wait_received(port, warm, 120).keys():
            raise SystemExit(f"no delivery arrived; see {work / 'logs'}")

        out(f"# {args.events} events, {args.endpoints} endpoints, {args.webhook_workers} webhook workers")
        # The senders stop consuming while the burst is committed, so the emitter (this process,
        # on the same cores) does not limit the delivery rate being measured.
        celery = queue.get_celery()
        webhook_queue = queue.webhook_queue()
        # Only this run's workers: others on the same Redis must not be told anything.
        host = socket.gethostname()
        senders = [f"webhooks-{proc.pid}@{host}" for proc in procs[2:]]
        paused = celery.control.cancel_consumer(webhook_queue, destination=senders, reply=True, timeout=5)
        if len(paused) != args.webhook_workers:
            out(f"warning: {len(paused)} of {args.webhook_workers} webhook workers paused")
        committed: dict[str, float] = {}
        for start in range(0, args.events, args.batch):
            with session_scope() as session:
                ids = [emit(session, i) for i in range(start, min(start + args.batch, args.events))]
                session.flush()
                stamp = time.time()  # before the commit: conservative
            committed.update(dict.fromkeys(ids, stamp))
        emitted = time.time()
        out(f"emit: {len(committed) / (emitted - min(committed.values())):.0f} events/s committed")
        resumed = time.time()
        celery.control.add_consumer(webhook_queue, destination=senders, reply=True, timeout=5)
        expected = deliveries(set(committed))
        arrivals = wait_received(port, set(expected), 600)
        missing = expected.keys() - arrivals.keys()
        last = max(arrivals[k] for k in expected if k in arrivals)
        sent = len(expected) - len(missing)
        out(
            f"throughput: {sent} queued deliveries sent in {last - resumed:.2f} s = "
            f"{sent / (last - resumed):.0f} deliveries/s; missing {len(missing)}"
        )

        out(f"# latency: {args.latency_events} status changes at {args.rate:.0f}/s, one per transaction")
        committed = {}
        begin = time.monotonic()
        for index in range(args.latency_events):
            pause = begin + index / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with session_scope() as session:
                event_id = emit(session, 100_000 + index)
                session.flush()
                stamp = time.time()
            committed[event_id] = stamp
        expected = deliveries(set(committed))
        arrivals = wait_received(port, set(expected), 300)
        missing = expected.keys() - arrivals.keys()
        latencies = [arrivals[k] - committed[e] for k, e in expected.items() if k in arrivals]
        out(
            f"latency (commit to arrival): p50 {statistics.median(latencies):.3f} s, "
            f"p95 {percentile(latencies, 95):.3f} s, p99 {percentile(latencies, 99):.3f} s, "
            f"max {max(latencies):.3f} s; missing {len(missing)}"
        )
        posts, _ = received(port)
        total = args.endpoints * (1 + args.events + args.latency_events)
        out(f"requests received in all: {posts} (expected {total})")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if receiver.is_alive():
            receiver.terminate()
        get_engine().dispose()
        drop_database(args.admin_url, name)
        import redis

        client = redis.Redis.from_url(args.redis_url)
        for key in client.scan_iter(f"*tuneforge-bench-{run}*"):
            client.delete(key)


if __name__ == "__main__":
    main()
