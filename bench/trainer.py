"""Trainer benchmark: training tokens per second and peak memory of `trainer.training.train` (the
loop a `tuneforge trainer` job runs), and decode tokens per second of the serving loop.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/trainer.py [--examples 100] [--epochs 1]
        [--batch-sizes 1 4] [--threads 1 2] [--model PATH_OR_HUB_ID]

Without --model it builds the tests' tiny Qwen2-style model (2 layers, hidden 64, a byte-level BPE
tokenizer trained on the reference kit) in a temporary folder; with --model (a GPU machine, e.g.
Qwen/Qwen2.5-0.5B-Instruct) it tunes that. Data: the kit's Huatuo-style rows with a system prompt,
as the first story sends them. Tokens are every token the model read (prompt and answer), per second
of the training loop (`job_s` adds loading the base, tokenizing and saving adapters); peak
memory is the process's maximum RSS (CPU) or torch's peak allocation (GPU). Each configuration runs
in a child process so its peak is its own."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
SYSTEM = "你是一名专业的医生，请根据患者的问题给出建议。"


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def conversations(n: int) -> list[list[dict[str, str]]]:
    rows = [
        json.loads(x) for x in (DATA / "huatuo_style_sample.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": r["questions"]},
            {"role": "assistant", "content": r["answers"]},
        ]
        for r in rows[:n]
    ]


def child(args: argparse.Namespace) -> None:
    import torch

    from trainer.serving import Decoding, Generation, LoadedBase
    from trainer.training import Hooks, TrainSpec, train

    threads = args.threads[0]
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        spec = TrainSpec(
            base_path=args.model,
            examples=conversations(args.examples),
            validation=[],
            n_epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate_multiplier=1.0,
            seed=0,
            out_dir=Path(out),
        )
        result = train(spec, Hooks())
        gpu = torch.cuda.is_available()
        peak_train = (
            torch.cuda.max_memory_allocated()
            if gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        base = LoadedBase(args.model)
        base.add_adapter("bench", result.adapter_dir)
        started = time.perf_counter()
        messages = conversations(1)[0][:2]
        generation = Generation(base, "bench", "bench", messages, decoding=Decoding(64, 0.0, 1.0, None, []))
        text = "".join(generation.pieces(0))
        decode_s = time.perf_counter() - started
        emit(
            json.dumps(
                {
                    "batch_size": args.batch_size,
                    "threads": threads,
                    "steps": result.steps,
                    "tokens": result.trained_tokens,
                    "job_s": round(result.seconds, 2),
                    "loop_s": round(result.loop_seconds, 2),
                    "tokens_per_s": round(result.trained_tokens / result.loop_seconds),
                    "peak_mib": round(peak_train / 2**20),
                    "decode_tokens": generation.completion_tokens,
                    "decode_tokens_per_s": round(generation.completion_tokens / decode_s, 1) if text else 0,
                    "device": "cuda" if gpu else "cpu",
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from trainer.tiny import build_tiny_model

            model = str(
                build_tiny_model(
                    Path(tmp), [DATA / "huatuo_style_sample.jsonl", DATA / "openai_chat_medicalgpt500.jsonl"]
                )
            )
        name = args.model or "tiny Qwen2 (2 layers, hidden 64)"
        emit(f"model: {name}; {args.examples} examples x {args.epochs} epoch(s)")
        for threads in args.threads:
            for batch_size in args.batch_sizes:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--model",
                    model,
                    "--examples",
                    str(args.examples),
                ]
                command += [
                    "--epochs",
                    str(args.epochs),
                    "--batch-size",
                    str(batch_size),
                    "--threads",
                    str(threads),
                ]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                emit(output.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
