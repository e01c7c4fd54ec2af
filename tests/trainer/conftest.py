"""The trainer's tests: a tiny Qwen2-style model built from a config in a temporary folder (nothing
is downloaded) and `tuneforge trainer` processes serving it over HTTP.

The whole directory is skipped where the `trainer` extra (torch, transformers, peft) is not
installed; CI installs it (.ci/run)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="the trainer extra is not installed")

from tests.conftest import TEST_ENV, WORK_DIR  # noqa: E402
from tests.support.paths import DATA  # noqa: E402
from tests.support.procs import Proc, free_port, wait_http  # noqa: E402

LOG_DIR = WORK_DIR / "logs"
# Chosen for a model this small (README, "Self-hosted trainer"): a real base model keeps the
# defaults (learning rate 2e-4, rank 16).
TINY_ARGS = ["--learning-rate", "2e-3", "--lora-rank", "32", "--threads", "1"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-qwen2"),
        [DATA / "huatuo_style_sample.jsonl", DATA / "openai_chat_medicalgpt500.jsonl"],
    )


@pytest.fixture(scope="session")
def pretrained_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wider tiny model, trained briefly on the kit's other samples (not the huatuo rows a story
    tunes on), so that generation is language-like and an eval can tell base from tuned."""
    from trainer.tiny import build_tiny_model, general_conversations, pretrain

    folder = build_tiny_model(
        tmp_path_factory.mktemp("tiny-qwen2-pretrained"),
        [DATA / "huatuo_style_sample.jsonl", DATA / "openai_chat_medicalgpt500.jsonl"],
        hidden_size=128,
        init_std=0.02,
    )
    pretrain(folder, general_conversations(DATA), steps=150)
    return folder


@dataclass
class TrainerProc:
    url: str
    data_dir: Path
    proc: Proc

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.popen.kill()
        self.proc.popen.wait()


def start_trainer(name: str, data_dir: Path, base_models: list[str]) -> TrainerProc:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    args = ["trainer", "--port", str(port), "--data-dir", str(data_dir), *TINY_ARGS]
    for spec in base_models:
        args += ["--base-model", spec]
    proc = Proc(name, args, TEST_ENV, LOG_DIR)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=120)
    except Exception:
        proc.stop()
        raise
    return TrainerProc(f"http://127.0.0.1:{port}", data_dir, proc)


@pytest.fixture(scope="module")
def trainer(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainerProc]:
    server = start_trainer("trainer", tmp_path_factory.mktemp("trainer-data"), [f"tiny={tiny_model}"])
    yield server
    server.stop()
