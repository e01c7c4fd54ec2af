"""Chat proxy benchmark (issue 6): the same chat load, at concurrency 32 and 1, non-stream and
stream, against a fast fake upstream directly and through each proxy, in one run.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/proxy.py [--profile] [--duration 5]

Rows (`--targets`, in this order by default):
  direct      the fake upstream itself (bench/proxy_upstream.py): the client's ceiling;
  bare        the floor for a Python proxy (bench/proxy_bare.py): uvicorn with uvloop + httptools,
              one pooled aiohttp session, no auth or accounting;
  bare-httpx  the same pass-through on Tuneforge's own stack: .venv's uvicorn (uvloop + httptools
              since they are pinned there) and one pooled httpx.AsyncClient, as shared/chat uses;
  tuneforge   `tuneforge api` on a throwaway Postgres database, with Redis, per-key limits on (far
              above the load), the fake upstream as its provider, called through an alias when
              `PUT /v1/aliases/{name}` exists, with the base model otherwise;
  litellm     LiteLLM's proxy (its own venv) with its documented production settings
              (bench/proxy_stack.py: litellm_config) and --num_workers = CPUs.
Extra rows for diagnosis: bare-plain-aiohttp (asyncio + h11, aiohttp), bare-plain-httpx (asyncio
+ h11, httpx), bare-httpx2 (httpx2, the httpx fork the openai SDK ships).

Each cell: a fresh load process (bench/proxy_load.py: raw asyncio + uvloop, keep-alive), a
warm-up, then a fixed window; every response is checked. Before the load each target is checked
with the official openai SDK (stream and not) and for buffering (of chunks sent 30 ms apart, 90%
must arrive before the next is sent; after one unmeasured stream). "cpu ms/req" is the CPU the
target's processes used per answered request, which is steadier than req/s on a shared machine.
The bench virtualenvs
(.bench-venvs/, git-ignored) are created on first use. --profile samples the Tuneforge API with
py-spy during an extra c32 run of each kind and prints where its time goes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_load import CHUNKS, EXPECTED  # noqa: E402
from proxy_profile import record, summarise  # noqa: E402
from proxy_stack import (  # noqa: E402
    LITELLM_KEY,
    LITELLM_PINS,
    MAIN_PYTHON,
    REPO,
    TOOLS_PINS,
    Proc,
    Tuneforge,
    ensure_venv,
    free_port,
    out,
    start_litellm,
    wait_http,
)

LOADAVG = " ".join(Path("/proc/loadavg").read_text().split()[:3])
DEFAULT_TARGETS = ["direct", "bare", "bare-httpx", "tuneforge", "litellm"]
BARE = {  # name: (venv, client, server)
    "bare": ("tools", "aiohttp", "auto"),
    "bare-httpx": ("main", "httpx", "auto"),
    "bare-plain-aiohttp": ("tools", "aiohttp", "plain"),
    "bare-plain-httpx": ("main", "httpx", "plain"),
    "bare-httpx2": ("main", "httpx2", "auto"),
}
MODES = [(32, False), (32, True), (1, False), (1, True)]


class Target:
    def __init__(self, name: str, url: str, proc: Proc, model: str = "gpt-4o-mini", token: str | None = None):
        self.name, self.url, self.proc, self.model, self.token = name, url, proc, model, token
        self.ok_requests = 0


def sdk_check(target: Target) -> str:
    """The official openai SDK, non-stream and stream with usage, through this target."""
    from openai import OpenAI

    client = OpenAI(base_url=target.url + "/v1", api_key=target.token or "sk-none", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Hello"}]
    try:
        done = client.chat.completions.create(model=target.model, messages=messages)
        assert done.choices[0].message.content == EXPECTED, done.choices[0].message.content
        assert done.usage and done.usage.completion_tokens == CHUNKS, done.usage
        stream = client.chat.completions.create(
            model=target.model, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        text, usage = [], None
        for chunk in stream:
            text += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(text) == EXPECTED, "".join(text)
        assert usage and usage.completion_tokens == CHUNKS, usage
    except Exception as exc:
        return f"FAIL {type(exc).__name__}: {str(exc)[:200]}"
    target.ok_requests += 2
    return "ok"


def load(tools: Path, target: Target, **options: Any) -> dict[str, Any]:
    argv = [str(tools), str(REPO / "bench" / "proxy_load.py"), "--url", target.url + "/v1/chat/completions"]
    argv += ["--model", target.model]
    if target.token:
        argv += ["--token", target.token]
    for key, value in options.items():
        if value is True:
            argv.append("--" + key.replace("_", "-"))
        elif value not in (False, None):
            argv += ["--" + key.replace("_", "-"), str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "load failed"}
    return json.loads(done.stdout)


def gap_check(tools: Path, target: Target) -> str:
    gap = 30
    result = load(tools, target, gap_check=gap, repeat=2)
    if result.get("error"):
        return f"FAIL {result['error'][:200]}"
    target.ok_requests += result["total_ok"]
    verdict = "ok" if result["p90_lag_ms"] < gap else "BUFFERED"
    return (
        f"{verdict} (chunk lag p90 {result['p90_lag_ms']:.1f} ms, max {result['max_lag_ms']:.1f} ms "
        f"over {result['chunks']} chunks sent {gap} ms apart)"
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per cell")
    p.add_argument("--litellm-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--tuneforge-workers", type=int, default=1, help="`tuneforge api --workers` (py-spy profiles only 1)"
    )
    p.add_argument("--profile", action="store_true", help="py-spy the Tuneforge API under c32 load")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    names = [n.strip() for n in args.targets.split(",") if n.strip()]

    tools = ensure_venv("tools", TOOLS_PINS)
    litellm_python = ensure_venv("litellm", LITELLM_PINS) if "litellm" in names else None
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-proxy-"))
    log_dir = work / "logs"
    log_dir.mkdir()
    procs: list[Proc] = []
    tuneforge: Tuneforge | None = None
    try:
        up_port = free_port()
        upstream = Proc("upstream", [str(tools), "bench/proxy_upstream.py", "--port", str(up_port)], log_dir)
        procs.append(upstream)
        up_url = f"http://127.0.0.1:{up_port}"
        wait_http(up_url + "/healthz", upstream, 30)
        targets: list[Target] = []
        for name in names:
            if name == "direct":
                targets.append(Target(name, up_url, upstream))
            elif name in BARE:
                venv, client, server = BARE[name]
                python = tools if venv == "tools" else MAIN_PYTHON
                port = free_port()
                argv = [str(python), "bench/proxy_bare.py", "--port", str(port), "--upstream", up_url + "/v1"]
                proc = Proc(name, [*argv, "--client", client, "--server", server], log_dir)
                procs.append(proc)
                wait_http(f"http://127.0.0.1:{port}/", proc, 30)
                targets.append(Target(name, f"http://127.0.0.1:{port}", proc))
            elif name == "tuneforge":
                tuneforge = Tuneforge(up_url + "/v1", work, args.tuneforge_workers)
                tuneforge.start(log_dir)
                out(f"tuneforge: calling {tuneforge.alias_note}")
                targets.append(Target(name, tuneforge.url, tuneforge.api, tuneforge.model, tuneforge.key))
            elif name == "litellm":
                assert litellm_python is not None
                t0 = time.monotonic()
                proc, url = start_litellm(litellm_python, up_url + "/v1", work, log_dir, args.litellm_workers)
                procs.append(proc)
                out(f"litellm: up after {time.monotonic() - t0:.0f} s, {args.litellm_workers} workers")
                targets.append(Target(name, url, proc, token=LITELLM_KEY))
            else:
                raise SystemExit(f"unknown target {name!r}")

        out("\ncorrectness (openai SDK; buffering):")
        checks = {}
        for t in targets:
            checks[t.name] = (sdk_check(t), gap_check(tools, t))
            out(f"  {t.name:<19} sdk {checks[t.name][0]}; stream {checks[t.name][1]}")

        results: dict[tuple[str, int, bool], dict[str, Any]] = {}
        for concurrency, stream in MODES:
            out(f"\nconcurrency {concurrency}, {'stream' if stream else 'non-stream'}:")
            for t in targets:
                cpu0 = t.proc.cpu_seconds()
                r = load(
                    tools,
                    t,
                    concurrency=concurrency,
                    stream=stream,
                    warmup=args.warmup,
                    duration=args.duration,
                )
                if not r.get("error"):
                    t.ok_requests += r["total_ok"]
                    r["cpu_ms_per_req"] = 1000 * (t.proc.cpu_seconds() - cpu0) / max(1, r["total_ok"])
                results[(t.name, concurrency, stream)] = r
                out(f"  {t.name:<19} {json.dumps(r)}")

        if args.profile and tuneforge is not None:
            profile(tools, next(t for t in targets if t.name == "tuneforge"), work, args)
        usage_line = account(tuneforge, next((t for t in targets if t.name == "tuneforge"), None))
        report(targets, results, checks, args, tuneforge, usage_line)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {f"{k[0]} c{k[1]} {'stream' if k[2] else 'json'}": v for k, v in results.items()},
                    indent=2,
                )
            )
    except BaseException:
        for proc in procs + (tuneforge.procs if tuneforge else []):
            sys.stderr.write(proc.tail() + "\n")
        raise
    finally:
        for proc in procs:
            proc.stop()
        if tuneforge is not None:
            tuneforge.stop()


def profile(tools: Path, target: Target, work: Path, args: argparse.Namespace) -> None:
    py_spy = tools.parent / "py-spy"
    for stream in (False, True):
        path = work / f"tuneforge-{'stream' if stream else 'json'}.txt"
        spy = record(py_spy, target.proc.pid, args.warmup + args.duration, path)
        r = load(tools, target, concurrency=32, stream=stream, warmup=0.5, duration=args.duration)
        target.ok_requests += r.get("total_ok", 0)
        _, err = spy.communicate(timeout=60)
        out(
            f"\nprofile of the Tuneforge API, c32 {'stream' if stream else 'non-stream'} "
            f"({fmt(r.get('rps'), 0)} req/s under py-spy; raw stacks: {path}):"
        )
        if not path.exists():
            out(f"  py-spy failed: {err.decode(errors='replace')[-500:]}")
            continue
        for line in summarise(path):
            out("  " + line)


def account(tuneforge: Tuneforge | None, target: Target | None) -> str:
    """Usage totals against what the upstream reported for every answered request."""
    if tuneforge is None or target is None:
        return ""
    time.sleep(3)  # batched writes land within a flush interval or two
    status, body = tuneforge.usage()
    expected = f"expected {target.ok_requests:,} requests, {target.ok_requests * (23 + CHUNKS):,} tokens"
    if status != 200:
        return f"usage: GET /v1/usage answered {status}; {expected}"
    totals = body.get("totals", body) if isinstance(body, dict) else body
    return f"usage: GET /v1/usage totals {json.dumps(totals)[:300]}; {expected}"


def report(targets, results, checks, args, tuneforge, usage_line) -> None:  # type: ignore[no-untyped-def]
    out(
        f"\n{'target':<19} {'mode':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ttfb p50':>9} "
        f"{'ttfb p99':>9} {'cpu ms/req':>10} {'errors':>6}"
    )
    out("-" * 100)
    for concurrency, stream in MODES:
        for t in targets:
            r = results[(t.name, concurrency, stream)]
            mode = f"c{concurrency} {'stream' if stream else 'json'}"
            if r.get("error"):
                out(f"{t.name:<19} {mode:<14} failed: {r['error'][:60]}")
                continue
            cells = [fmt(r["rps"], 0).rjust(9), fmt(r["p50_ms"], 2).rjust(8), fmt(r["p99_ms"], 2).rjust(8)]
            cells += [fmt(r["ttfb_p50_ms"], 2).rjust(9), fmt(r["ttfb_p99_ms"], 2).rjust(9)]
            cells += [fmt(r["cpu_ms_per_req"], 2).rjust(10), str(r["errors"]).rjust(6)]
            out(f"{t.name:<19} {mode:<14} " + " ".join(cells))
    out("")
    names = {t.name for t in targets}

    def get(name: str, c: int, s: bool, key: str) -> float | None:
        r = results.get((name, c, s)) or {}
        return r.get(key)

    if "tuneforge" in names:
        for c, s in MODES[:2]:
            mode = f"c{c} {'stream' if s else 'json'}"
            tf = get("tuneforge", c, s, "rps")
            if tf and "bare" in names and get("bare", c, s, "rps"):
                ratio = tf / get("bare", c, s, "rps")
                out(
                    f"target tuneforge >= 50% of bare req/s ({mode}): {100 * ratio:.0f}% "
                    f"{'MET' if ratio >= 0.5 else 'NOT MET'}"
                )
            if tf and "litellm" in names and get("litellm", c, s, "rps"):
                ratio = tf / get("litellm", c, s, "rps")
                verdict = "MET" if ratio >= 30 else "NOT MET"
                out(f"target tuneforge >= 30x litellm req/s ({mode}): {ratio:.1f}x {verdict}")
        tf_ttfb = get("tuneforge", 1, True, "ttfb_p50_ms")
        for base in ("bare", "direct"):
            if tf_ttfb is not None and base in names and get(base, 1, True, "ttfb_p50_ms") is not None:
                added = tf_ttfb - get(base, 1, True, "ttfb_p50_ms")
                out(
                    f"target tuneforge adds <= 2 ms TTFB p50 at c1 vs {base}: +{added:.2f} ms "
                    f"{'MET' if added <= 2 else 'NOT MET'}"
                )
        out(f"tuneforge called: {tuneforge.alias_note}")
        out(usage_line)
    if "litellm" in names:
        out(
            f"litellm: {', '.join(LITELLM_PINS)}, settings: LITELLM_LOG=ERROR, set_verbose false, json_logs, "
            "request_timeout 600, master_key, disable_spend_logs, disable_error_logs, no database"
        )
    out(f"command: {' '.join(sys.argv)}; load average before the run: {LOADAVG}")
    out(
        f"\nwarm-up {args.warmup:g} s, measured {args.duration:g} s per cell; {os.cpu_count()} CPUs; "
        f"litellm --num_workers {args.litellm_workers}; "
        f"tuneforge api --workers {args.tuneforge_workers}; logs in {targets[0].proc.log.parent}"
    )


if __name__ == "__main__":
    main()
