"""Where a proxy process spends its CPU: py-spy samples (collapsed stacks) summarised by package
and by Tuneforge function, for bench/proxy.py --profile."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

OURS = ("api", "shared")  # cli/ is only the entry point below the event loop


def record(py_spy: Path, pid: int, seconds: float, output: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` (every thread, native frames off); --nonblocking so
    the process is not paused at each sample, which would slow what is measured."""
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate)]
    argv += ["--format", "raw", "--nonblocking", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _group(frame: str) -> str:
    """The package a frame's code lives in: py-spy names files relative to their sys.path entry
    (`httpcore/_async/http11.py`, `socket.py`, `api/routes/chat.py`)."""
    match = re.search(r"\(([^()]+?)(?::\d+)?\)$", frame)
    if match is None:
        return "other"
    path = match.group(1)
    if path.startswith("<"):
        return "stdlib"
    first = path.split("/")[0]
    if first in OURS:
        return f"tuneforge {first}/"
    return f"stdlib {first[:-3]}" if first.endswith(".py") else first


def _short(frame: str) -> str:
    """`chat_completions (api/routes/chat.py:62)` without the line: samples of one function add up."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return frame


def summarise(path: Path, top: int = 15) -> list[str]:
    stacks = _stacks(path)
    total = sum(count for _, count in stacks)
    if not total:
        return ["(no samples: is py-spy allowed to read the process?)"]
    by_leaf_group: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    inclusive_ours: Counter[str] = Counter()
    inclusive_group: Counter[str] = Counter()
    for frames, count in stacks:
        # py-spy's raw format puts the thread first and the leaf last.
        leaf = frames[-1]
        by_leaf_group[_group(leaf)] += count
        by_leaf[_short(leaf)] += count
        for group in {_group(frame) for frame in frames}:
            inclusive_group[group] += count
        seen = set()
        for frame in frames:
            if _group(frame).startswith("tuneforge"):
                name = _short(frame)
                if name not in seen:
                    seen.add(name)
                    inclusive_ours[name] += count
    lines = [f"{total} samples while busy (idle threads excluded)", "", "self time by package:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_leaf_group.most_common()]
    lines += ["", "inclusive time by package (a sample counts for every package on its stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive_group.most_common(top)]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_leaf.most_common(top)]
    lines += ["", f"top {top} Tuneforge functions by inclusive time (callees counted):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive_ours.most_common(top)]
    return lines
