"""The first story through Tuneforge with the trainer as the project's `openai_compatible`
provider: the huatuo preset (100 samples, a system prompt) becomes a tune that really trains on
the tiny model, its loss curve falls, chat with the tuned model streams through the gateway, and
an eval of base vs tuned on the training questions puts the tuned model ahead on ROUGE-L."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.e2e.story import SYSTEM_PROMPT, client, upload_dataset, wait_dataset, wait_tune
from tests.support.paths import HUATUO
from tests.support.procs import wait_for
from tests.trainer.conftest import TrainerProc, start_trainer

# Tuneforge tunes and prices models of its catalog, so the tiny model is served under a catalog
# name (and its alias, which the gateway may pass through).
BASE = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def story_trainer(pretrained_tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, stack) -> Any:  # type: ignore[no-untyped-def]
    server = start_trainer(
        "trainer-story",
        tmp_path_factory.mktemp("trainer-story"),
        [f"{SNAPSHOT}={pretrained_tiny_model}", f"{BASE}={pretrained_tiny_model}"],
    )
    yield server
    server.stop()


def test_first_story_on_the_self_hosted_trainer(stack, make_key, story_trainer: TrainerProc) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    http.timeout = httpx.Timeout(120)
    provider = http.post(
        "/v1/providers",
        json={
            "name": "selfhosted",
            "kind": "openai_compatible",
            "base_url": f"{story_trainer.url}/v1",
            "api_key": "local-trainer",
            "default": True,
        },
    )
    assert provider.status_code == 201, provider.text

    dataset = upload_dataset(
        http, HUATUO, preset="huatuo", sample_size="100", seed="7", system_prompt=SYSTEM_PROMPT
    )
    dataset = wait_dataset(http, dataset["id"])
    assert dataset["status"] == "ready", dataset
    created = http.post(
        "/v1/tunes",
        json={
            "dataset_id": dataset["id"],
            "base_model": BASE,
            "n_epochs": 5,
            "suffix": "medqa",
            "provider": "selfhosted",
        },
    )
    assert created.status_code == 202, created.text
    try:
        tune = wait_tune(http, created.json()["id"], timeout=600)
    except Exception:
        print(stack.logs(), story_trainer.proc.tail())
        raise
    assert tune["status"] == "succeeded", tune
    assert tune["provider"] == "selfhosted"
    model = tune["fine_tuned_model"]
    assert model.startswith(f"ft:{SNAPSHOT}:tuneforge-trainer:medqa:")

    points = http.get(f"/v1/tunes/{tune['id']}/metrics").json()["data"]
    losses = [p["train_loss"] for p in points]
    assert len(losses) == 500  # 100 examples, batch 1, 5 epochs: every step reported
    tenth = len(losses) // 10
    assert sum(losses[-tenth:]) / tenth < sum(losses[:tenth]) / tenth
    checkpoints = http.get(f"/v1/tunes/{tune['id']}/checkpoints").json()["data"]
    assert sorted(c["step"] for c in checkpoints) == [300, 400, 500]  # the last three epochs

    train_rows = http.get(
        f"/v1/datasets/{dataset['id']}/content", params={"split": "train"}
    ).text.splitlines()
    question = httpx.Response(200, content=train_rows[0]).json()["messages"][1]["content"]
    sdk = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0, timeout=120)
    chunks = list(
        sdk.chat.completions.create(
            model=tune["id"],
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            stream=True,
            temperature=0,
            max_tokens=32,
            stream_options={"include_usage": True},
        )
    )
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    created_eval = http.post(
        "/v1/evals",
        json={
            "dataset_id": dataset["id"],
            "models": [BASE, tune["id"]],
            "split": "train",
            "max_items": 40,
            "seed": 1,
            "generation": {"temperature": 0, "max_tokens": 64},
        },
    )
    assert created_eval.status_code == 202, created_eval.text

    def finished() -> dict[str, Any] | None:
        body = http.get(f"/v1/evals/{created_eval.json()['id']}").json()
        return body if body["status"] in ("completed", "failed") else None

    result = wait_for(finished, 600, interval=1, what="the eval")
    assert result["status"] == "completed", result
    scores = result["metrics"]
    base, tuned = scores[BASE]["char"]["rouge_l"]["value"], scores[tune["id"]]["char"]["rouge_l"]["value"]
    print(f"ROUGE-L (characters) on 40 training questions: base {base:.2f}, tuned {tuned:.2f}")
    for item in result["items"][:3]:
        print(item["reference"][:60], [o["answer"][:60] for o in item["outputs"]])
    assert tuned > base, (base, tuned)
    assert scores[BASE]["errors"] == scores[tune["id"]]["errors"] == 0
