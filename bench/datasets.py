"""Dataset pipeline benchmark: the full `shared.datasets.pipeline.prepare` against two baselines on
the same synthetic file, in one invocation.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/datasets.py --examples 200000
    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/datasets.py --examples 2000000 --variants \\
        cookbook,floor,pipeline,floor-fast,pipeline-fast

It writes a deterministic (seeded) synthetic chat dataset of N examples to a temporary JSONL file,
streaming: OpenAI chat lines in Chinese, every one with the same system prompt, a user question
and an assistant answer (about 870 bytes and 222 tokens a line); about 1 % of the lines repeat a
recent line exactly and 0.5 % repeat one with different punctuation and case, so dedup has work.
Then it runs each variant in its own subprocess (so peak RSS is that variant's alone: the child's
`ru_maxrss` from `wait4`), and prints examples/s, MB/s (input bytes, 10^6) and peak RSS:

- cookbook: OpenAI's data-prep notebook, verbatim in spirit: `json.loads` every line into a list,
  the seven format checks, then `num_tokens_from_messages` with `encoding.encode` per value.
- floor (tiktoken): `orjson.loads` line by line and the fastest exact count of every message with
  tiktoken: batches of lines, each message's content counted by N threads, each running its own
  `encode_ordinary` loop (role names are a closed set and counted once). Nothing else: no caching
  of repeated strings, no checks, no output. Its token total must equal the cookbook's.
- pipeline (tiktoken): `prepare()` with its defaults (preset auto, gpt-4o-mini), writing the train
  JSONL; TUNEFORGE_TOKENIZER=tiktoken.
- pipeline (tiktoken, 1 thread): the same with tokenizer_threads=1, to show what the threads buy.
- floor (quicktok) / pipeline (quicktok): the same with the optional exact tokenizer
  (`pip install '.[fast]'`), when it is installed; quicktok holds the GIL, so the floor counts in
  one loop (faster on few cores than its native multi-threaded batch call).

Encodings are loaded before the clock starts in every variant (a warm worker has them); the time
runs from opening the file to the last count (the report, for the pipeline). N threads is the
number of CPUs this process may use unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from support import out  # noqa: E402

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken"))

ENCODING = "o200k_base"  # gpt-4o-mini's, the pipeline's default target model
BATCH_BYTES = 1 << 20  # the floor's batch of lines


def _words(text: str) -> list[str]:
    return text.split()


SYSTEM = "你是一名经验丰富的全科医生，请用简洁、准确的中文回答患者的问题，必要时建议就医。"
WHO = _words("我 我妈妈 孩子 老人 我爸爸 我老公 同事 我朋友")
SINCE = _words("最近三天 一个星期了 两个月来 今天早上开始 半年多了 反复发作好几年 昨晚开始")
SUBJECT = _words(
    "头痛 发热 咳嗽 腹泻 失眠 胃痛 高血压 糖尿病 过敏性鼻炎 腰椎间盘突出 湿疹 贫血 甲状腺结节 胆结石 偏头痛 "
    "哮喘 痛风 便秘 口腔溃疡 颈椎病"
)
ASK = _words("怎么办 吃什么药好 需要做什么检查 严重吗 要去医院吗 饮食上注意什么 能自己好吗 会传染吗")
ADVICE = _words(
    "建议先到正规医院就诊，明确病因后再对症治疗 注意休息，保证充足睡眠 "
    "多喝温水，饮食清淡，少吃辛辣刺激的食物 可以在医生指导下服用药物 如果症状持续加重，应及时就医 "
    "必要时做血常规和影像学检查 保持心情舒畅，适当运动 避免熬夜和过度劳累 定期复查，遵医嘱用药 "
    "戒烟限酒，控制体重 注意观察体温变化 不要自行滥用抗生素 可以配合中医调理 平时注意保暖，预防感冒 "
    "这种情况多与生活习惯有关 用药期间不要饮酒 症状明显时可以冷敷或热敷缓解 建议做一次全面体检 "
    "注意补充维生素和优质蛋白 儿童和老人用药要减量 避免长时间低头看手机 睡前不要喝浓茶和咖啡 "
    "可以适当做一些有氧运动，比如快走和游泳 如果出现胸闷、气短，要立即就医 保持室内通风，勤洗手 "
    "平时少吃高盐高脂的食物 需要排除器质性病变 按时服药，不要随意停药 孕妇用药一定要咨询医生 "
    "多数患者经过规范治疗可以明显好转"
)


# --- the dataset -------------------------------------------------------------------------------


def generate(path: Path, n: int, seed: int) -> int:
    """Write n chat lines to path, a line at a time; returns the bytes written."""
    import orjson

    rng = random.Random(seed)
    recent: list[tuple[str, str]] = []
    written = 0
    with path.open("wb") as f:
        for i in range(n):
            draw = rng.random()
            if recent and draw < 0.01:
                question, answer = rng.choice(recent)  # an exact repeat
            elif recent and draw < 0.015:
                question, answer = rng.choice(recent)  # a repeat up to punctuation and case
                question = question.replace("？", "?").replace("，", ", ") + " "
            else:
                question = (
                    f"{rng.choice(WHO)}{rng.randrange(1, 90)}岁，{rng.choice(SINCE)}{rng.choice(SUBJECT)}，"
                    f"体温{36 + rng.randrange(40) / 10:.1f}度，{rng.choice(ASK)}？"
                )
                answer = "，".join(rng.sample(ADVICE, rng.randint(8, 20))) + f"。第{i}号问答仅供参考。"
                if len(recent) < 1000:
                    recent.append((question, answer))
                else:
                    recent[rng.randrange(1000)] = (question, answer)
            line = orjson.dumps(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            f.write(line)
            written += len(line)
    return written


# --- the variants (each runs in a child process) -----------------------------------------------


def run_cookbook(path: Path, threads: int, notebook: bool = False) -> dict[str, Any]:
    """OpenAI's Chat_finetuning_data_prep notebook: load, seven checks, num_tokens_from_messages;
    `notebook`: also the notebook's per-example message count and assistant-token pass."""
    import tiktoken

    encoding = tiktoken.get_encoding(ENCODING)
    encoding.encode("warm up")
    start = time.perf_counter()
    with path.open(encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]

    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages: list[dict[str, Any]], tokens_per_message: int = 3) -> int:
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += 1
        return num_tokens + 3

    def num_assistant_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        return sum(len(encoding.encode(m["content"])) for m in messages if m["role"] == "assistant")

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_message_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        convo_lens.append(num_tokens_from_messages(messages))
        if notebook:
            n_messages.append(len(messages))
            assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    seconds = time.perf_counter() - start
    assert not format_errors, format_errors
    return {"seconds": seconds, "examples": len(dataset), "tokens": sum(convo_lens)}


def _floor(path: Path, count_all: Any, role_tokens: dict[str, int]) -> dict[str, Any]:
    import orjson

    loads = orjson.loads
    examples = total = 0
    start = time.perf_counter()
    with path.open("rb") as f:
        while lines := f.readlines(BATCH_BYTES):
            contents: list[str] = []
            fixed = 0
            for line in lines:
                for message in loads(line)["messages"]:
                    fixed += 3 + role_tokens[message["role"]]
                    contents.append(message["content"])
                fixed += 3
            examples += len(lines)
            total += fixed + sum(count_all(contents))
    return {"seconds": time.perf_counter() - start, "examples": examples, "tokens": total}


def run_floor(path: Path, threads: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    import tiktoken

    encode = tiktoken.get_encoding(ENCODING).encode_ordinary
    roles = {role: len(encode(role)) for role in ("system", "user", "assistant", "tool", "function")}

    def loop(texts: list[str]) -> list[int]:
        return [len(encode(text)) for text in texts]

    with ThreadPoolExecutor(max(1, threads - 1)) as pool:

        def count_all(texts: list[str]) -> list[int]:
            if threads < 2:
                return loop(texts)
            parts = [texts[i::threads] for i in range(threads)]
            futures = [pool.submit(loop, part) for part in parts[1:]]
            results = [loop(parts[0])] + [future.result() for future in futures]
            return [n for result in results for n in result]  # order does not matter for a sum

        return _floor(path, count_all, roles)


def run_floor_joined(path: Path, threads: int) -> dict[str, Any]:
    """The floor with tiktoken's fastest exact route here: each thread encodes its share of a batch
    joined by <|endoftext|> (allowed) in one call that holds no GIL, and counts the runs between
    the separators (exact: tiktoken splits the text between special tokens separately)."""
    from concurrent.futures import ThreadPoolExecutor

    import tiktoken

    encoding = tiktoken.get_encoding(ENCODING)
    core, separator = encoding._core_bpe, "<|endoftext|>"
    roles = {role: len(encoding.encode_ordinary(role)) for role in ("system", "user", "assistant")}

    def joined(texts: list[str]) -> list[int]:
        assert not any(separator in text for text in texts)
        data = memoryview(core.encode_to_tiktoken_buffer(separator.join(texts) + separator, {separator}))
        # Every token but the separators counts: the total is all we need here.
        return [data.nbytes // 4 - len(texts)]

    with ThreadPoolExecutor(max(1, threads - 1)) as pool:

        def count_all(texts: list[str]) -> list[int]:
            parts = [texts[i::threads] for i in range(threads)]
            futures = [pool.submit(joined, part) for part in parts[1:]]
            return joined(parts[0]) + [n for future in futures for n in future.result()]

        return _floor(path, count_all, roles)


def run_floor_fast(path: Path, threads: int) -> dict[str, Any]:
    import quicktok

    count = quicktok.get_encoding(ENCODING).count
    roles = {role: count(role) for role in ("system", "user", "assistant", "tool", "function")}
    return _floor(path, lambda texts: [count(text) for text in texts], roles)


def _pipeline(path: Path, threads: int) -> dict[str, Any]:
    from shared import tokens
    from shared.datasets.pipeline import prepare

    tokens.tokenizer_backend(ENCODING)  # load the tokenizer (and check quicktok) before the clock
    directory = path.parent
    start = time.perf_counter()
    with (
        path.open("rb") as source,
        (directory / "train.jsonl").open("wb") as train,
        (directory / "validation.jsonl").open("wb") as validation,
    ):
        report = prepare(source, train_out=train, validation_out=validation, tokenizer_threads=threads)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "examples": report.rows_read,
        "tokens": report.tokens["total"] + report.validation_tokens,
        "written": report.examples,
        "duplicates": report.duplicates,
        "backend": tokens.tokenizer_backend(ENCODING).name,
    }


VARIANTS: dict[str, tuple[str, Any, dict[str, str], bool]] = {
    # name: (label, function, environment, uses N threads)
    "cookbook": ("cookbook", run_cookbook, {}, False),
    "notebook": ("cookbook (whole notebook cell)", lambda p, t: run_cookbook(p, t, notebook=True), {}, False),
    "floor": ("floor (tiktoken)", run_floor, {}, True),
    "floor-joined": ("floor (tiktoken, joined)", run_floor_joined, {}, True),
    "pipeline": ("pipeline (tiktoken)", _pipeline, {"TUNEFORGE_TOKENIZER": "tiktoken"}, True),
    "pipeline-1": ("pipeline (tiktoken, 1 thread)", _pipeline, {"TUNEFORGE_TOKENIZER": "tiktoken"}, False),
    "floor-fast": ("floor (quicktok)", run_floor_fast, {}, False),
    "pipeline-fast": ("pipeline (quicktok)", _pipeline, {"TUNEFORGE_TOKENIZER": "quicktok"}, True),
}


def child(variant: str, path: Path, threads: int) -> None:
    result = VARIANTS[variant][1](path, threads)
    out(json.dumps(result))


def run_child(variant: str, path: Path, threads: int) -> dict[str, Any]:
    label, _, environment, threaded = VARIANTS[variant]
    command = [sys.executable, __file__, "--child", variant, "--file", str(path)]
    command += ["--threads", str(threads if threaded else 1)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, **environment}, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{variant} failed ({status}):\n{output}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["label"] = label
    return result


def available(variant: str) -> bool:
    if not variant.endswith("-fast"):
        return True
    try:
        import quicktok  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="tokenizer threads (default: the CPUs)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS)
    )
    parser.add_argument(
        "--repeat", type=int, default=0, help="runs per variant, the fastest counts (default 3; 1 above 500k)"
    )
    parser.add_argument("--dir", help="where to write the dataset (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset and the outputs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from shared.tokens import default_threads

    threads = args.threads or default_threads()
    if args.child:
        child(args.child, Path(args.file), threads)
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    skipped = [v for v in variants if not available(v)]
    variants = [v for v in variants if v not in skipped]
    directory = Path(args.dir or tempfile.mkdtemp(prefix="tuneforge-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "synthetic.jsonl"
    try:
        started = time.perf_counter()
        size = generate(path, args.examples, args.seed)
        out(
            f"dataset: {args.examples:,} examples, {size / 1e6:,.1f} MB, seed {args.seed} "
            f"(generated in {time.perf_counter() - started:.1f} s); {threads} tokenizer thread(s), "
            f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}"
        )
        if skipped:
            out(f"skipped (quicktok not installed): {', '.join(skipped)}")
        repeat = args.repeat or (3 if args.examples <= 500_000 else 1)
        results: dict[str, dict[str, Any]] = {}
        # Round after round, so that a noisy neighbour slows every variant alike; the fastest run
        # of each counts, and its highest peak RSS.
        for round_ in range(1, repeat + 1):
            for variant in variants:
                result = run_child(variant, path, threads)
                out(
                    f"  round {round_}/{repeat} {result['label']}: {result['seconds']:.2f} s, "
                    f"peak RSS {result['rss_mib']:.0f} MiB"
                )
                best = results.get(variant)
                if best is not None:
                    result["rss_mib"] = max(result["rss_mib"], best["rss_mib"])
                    if best["seconds"] <= result["seconds"]:
                        best["rss_mib"] = result["rss_mib"]
                        continue
                results[variant] = result
        report(results, size)
    finally:
        if args.keep:
            out(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


COLUMNS = (("variant", 30), ("examples/s", 10), ("MB/s", 6), ("peak RSS MiB", 12), ("× cookbook", 10))


def report(results: dict[str, dict[str, Any]], size: int) -> None:
    def rate(variant: str) -> float:
        return results[variant]["examples"] / results[variant]["seconds"]  # type: ignore[no-any-return]

    columns = [*COLUMNS, ("× floor", 8)] + ([("× quicktok floor", 16)] if "floor-fast" in results else [])
    out()
    out(
        "| "
        + " | ".join(
            f"{name:<{width}}" if i == 0 else f"{name:>{width}}" for i, (name, width) in enumerate(columns)
        )
        + " |"
    )
    out("|" + "|".join("-" * (width + 2) for _, width in columns) + "|")
    for variant, result in results.items():
        cells = [
            f"{result['label']:<30}",
            f"{rate(variant):>10,.0f}",
            f"{size / result['seconds'] / 1e6:>6.1f}",
            f"{result['rss_mib']:>12.0f}",
        ]
        for baseline, width in (("cookbook", 10), ("floor", 8), ("floor-fast", 16)):
            if baseline == "floor-fast" and "floor-fast" not in results:
                continue
            cells.append(
                f"{rate(variant) / rate(baseline):>{width}.2f}" if baseline in results else f"{'-':>{width}}"
            )
        out("| " + " | ".join(cells) + " |")
    out()
    totals = {v: r["tokens"] for v, r in results.items() if not v.startswith("pipeline")}
    if len(set(totals.values())) > 1:
        raise SystemExit(f"token totals differ between the baselines: {totals}")
    if totals:
        out(f"tokens, every line (cookbook formula, every baseline): {next(iter(totals.values())):,}")
    for result in results.values():
        if "written" in result:
            out(
                f"{result['label']}: {result['tokens']:,} tokens in {result['written']:,} examples written, "
                f"duplicates dropped {result['duplicates']}, tokenizer {result['backend']}"
            )
    out()
    for variant in ("pipeline", "pipeline-fast"):
        if variant not in results:
            continue
        checks = []
        if "cookbook" in results:
            ratio = rate(variant) / rate("cookbook")
            checks.append(f"{ratio:.2f}× cookbook (≥ 3: {ratio >= 3})")
        for floor in ("floor", "floor-fast"):
            if floor in results:
                ratio = rate(variant) / rate(floor)
                checks.append(f"{ratio:.0%} of {results[floor]['label']} (≥ 60%: {ratio >= 0.6})")
        rss = results[variant]["rss_mib"]
        checks.append(f"peak RSS {rss * 1.048576:.0f} MB (< 300: {rss * 1.048576 < 300})")
        out(f"{results[variant]['label']}: " + "; ".join(checks))


if __name__ == "__main__":
    main()
