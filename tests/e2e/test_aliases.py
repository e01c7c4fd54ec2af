"""Aliases through the real stack: CRUD and validation codes, switches and rollbacks seen by the
very next chat request (sync and async SDK, stream and not), weighted splits, stickiness per
user, `GET /v1/models` and tenancy. The sandbox answers with the snapshot it served as `model`."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from shared import auth
from shared.db import session_scope
from shared.ids import new_id
from shared.models import Tune
from tests.e2e.story import client, upload_dataset, wait_dataset, wait_tune
from tests.support.paths import HUATUO

MINI_4O = "gpt-4o-mini-2024-07-18"
MINI_41 = "gpt-4.1-mini-2025-04-14"
HELLO = [{"role": "user", "content": "Say hello."}]


def sdk(stack: Any, key: str) -> OpenAI:
    return OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)


def async_sdk(stack: Any, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)


def put(http: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    response = http.put(f"/v1/aliases/{name}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_alias_lifecycle_keeps_every_version(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    created = put(http, "support", model="gpt-4o-mini")
    assert created["object"] == "alias" and created["name"] == "support" and created["version"] == 1
    assert created["targets"] == [{"model": "gpt-4o-mini", "weight": 1, "share": 1.0}]
    assert created["log_requests"] is False
    # The same state again is not a new version.
    assert put(http, "support", model="gpt-4o-mini")["version"] == 1

    split = put(
        http,
        "support",
        targets=[{"model": "gpt-4o-mini", "weight": 90}, {"model": "gpt-4.1-mini", "weight": 10}],
        log_requests=True,
    )
    assert split["version"] == 2
    assert [(t["model"], t["weight"], t["share"]) for t in split["targets"]] == [
        ("gpt-4o-mini", 90, 0.9),
        ("gpt-4.1-mini", 10, 0.1),
    ]
    # Omitting log_requests keeps it: switching a target must not silently stop logging.
    third = put(http, "support", model="gpt-4.1-mini")
    assert third["version"] == 3 and third["log_requests"] is True

    got = http.get("/v1/aliases/support").json()
    assert got["version"] == 3
    assert [v["version"] for v in got["history"]] == [3, 2, 1]
    assert [v["current"] for v in got["history"]] == [True, False, False]
    assert got["history"][2]["targets"] == [{"model": "gpt-4o-mini", "weight": 1}]
    assert all(v["key_id"] and v["key_id"].startswith("key_") for v in got["history"])

    back = http.post("/v1/aliases/support/rollback")
    assert back.status_code == 200, back.text
    assert back.json()["version"] == 4 and [t["model"] for t in back.json()["targets"]] == [
        "gpt-4o-mini",
        "gpt-4.1-mini",
    ]
    to_first = http.post("/v1/aliases/support/rollback", json={"version": 1}).json()
    assert to_first["version"] == 5 and to_first["targets"][0]["model"] == "gpt-4o-mini"
    assert to_first["log_requests"] is False
    versions = http.get("/v1/aliases/support/versions", params={"limit": 2}).json()
    assert [v["version"] for v in versions["data"]] == [5, 4] and versions["has_more"] is True
    older = http.get("/v1/aliases/support/versions", params={"before": 4}).json()
    assert [v["version"] for v in older["data"]] == [3, 2, 1] and older["has_more"] is False

    assert error_code(http.post("/v1/aliases/support/rollback", json={"version": 5})) == (
        409,
        "already_current_version",
    )
    assert error_code(http.post("/v1/aliases/support/rollback", json={"version": 42})) == (
        404,
        "alias_version_not_found",
    )
    put(http, "another", model="gpt-4.1-mini")
    assert [a["name"] for a in http.get("/v1/aliases").json()["data"]] == ["another", "support"]

    deleted = http.delete("/v1/aliases/support")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert error_code(http.get("/v1/aliases/support")) == (404, "alias_not_found")
    assert error_code(http.delete("/v1/aliases/support")) == (404, "alias_not_found")
    assert error_code(http.get("/v1/aliases/support/versions")) == (404, "alias_not_found")
    assert [a["name"] for a in http.get("/v1/aliases").json()["data"]] == ["another"]


SPLIT = [{"model": "gpt-4o-mini", "weight": 90}, {"model": "gpt-4.1-mini", "weight": 10}]


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("ft:gpt-4o-mini:acme", {"model": "gpt-4o-mini"}, 400, "invalid_alias_name"),
        ("tune_abc", {"model": "gpt-4o-mini"}, 400, "invalid_alias_name"),
        ("has space", {"model": "gpt-4o-mini"}, 400, "invalid_alias_name"),
        ("-dash-first", {"model": "gpt-4o-mini"}, 400, "invalid_alias_name"),
        ("x" * 101, {"model": "gpt-4o-mini"}, 400, "invalid_alias_name"),
        ("ok", {}, 400, "missing_targets"),
        ("ok", {"targets": []}, 400, "missing_targets"),
        ("ok", {"model": "gpt-4o-mini", "targets": SPLIT}, 400, "conflicting_targets"),
        ("ok", {"targets": [{"model": f"m{i}", "weight": 1} for i in range(11)]}, 400, "too_many_targets"),
        ("ok", {"targets": [SPLIT[0], {"model": "gpt-4.1-mini"}]}, 400, "missing_weight"),
        ("ok", {"targets": [SPLIT[0], {"model": "gpt-4.1-mini", "weight": 0}]}, 400, "invalid_weight"),
        ("ok", {"targets": [{"model": "gpt-4o-mini", "weight": -3}]}, 400, "invalid_weight"),
        ("ok", {"targets": [{"model": "gpt-4o-mini", "weight": "90"}]}, 400, "invalid_request"),
        ("ok", {"targets": [{"model": "gpt-4o-mini", "weight": 2.5}]}, 400, "invalid_request"),
        ("ok", {"model": "no-such-model"}, 400, "unknown_target"),
        ("ok", {"model": "tune_doesnotexist"}, 400, "unknown_target"),
        ("ok", {"model": "ft:gpt-4o-mini-2024-07-18:acme::nope"}, 400, "unknown_target"),
        (
            "ok",
            {"targets": [SPLIT[0], {"model": MINI_4O, "weight": 10}]},
            400,
            "duplicate_target",
        ),
        ("ok", {"model": "existing"}, 400, "target_is_alias"),
        ("ok", {"model": "gpt-4o-mini", "colour": "blue"}, 400, "invalid_request"),
        ("ok", {"model": "gpt-4o-mini", "log_requests": "sometimes"}, 400, "invalid_request"),
    ],
)
def test_bad_alias_writes_are_refused_with_a_code(  # type: ignore[no-untyped-def]
    stack, make_key, name, body, status, code
) -> None:
    http = client(stack.api_url, make_key())
    put(http, "existing", model="gpt-4.1-mini")
    response = http.put(f"/v1/aliases/{name}", json=body)
    assert error_code(response) == (status, code), response.text
    assert response.json()["error"]["message"]
    # Nothing was written.
    assert [a["name"] for a in http.get("/v1/aliases").json()["data"]] == ["existing"]
    assert http.get("/v1/aliases/existing").json()["version"] == 1


def test_rollback_needs_an_earlier_version(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    put(http, "solo", model="gpt-4o-mini")
    assert error_code(http.post("/v1/aliases/solo/rollback")) == (409, "no_previous_version")
    assert error_code(http.post("/v1/aliases/nope/rollback")) == (404, "alias_not_found")
    assert error_code(http.post("/v1/aliases/solo/rollback", json={"version": 0})) == (
        400,
        "invalid_request",
    )


def _served_sync(api: OpenAI, model: str, stream: bool) -> str:
    if not stream:
        return api.chat.completions.create(model=model, messages=HELLO).model  # type: ignore[arg-type]
    chunks = list(api.chat.completions.create(model=model, messages=HELLO, stream=True))  # type: ignore[arg-type]
    assert len(chunks) > 1
    return chunks[0].model


async def _served_async(stack: Any, key: str, model: str, stream: bool) -> str:
    # One client per event loop: asyncio.run closes the loop its connections belong to.
    async with async_sdk(stack, key) as api:
        if not stream:
            reply = await api.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
            return reply.model
        chunks = await api.chat.completions.create(model=model, messages=HELLO, stream=True)  # type: ignore[arg-type]
        models = [c.model async for c in chunks]
        assert len(models) > 1
        return models[0]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_switch_and_rollback_reach_the_next_request(stack, make_key, mode, stream) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    sync_api = sdk(stack, key)

    def served() -> str:
        if mode == "sync":
            return _served_sync(sync_api, "frontend", stream)
        return asyncio.run(_served_async(stack, key, "frontend", stream))

    put(http, "frontend", model="gpt-4o-mini")
    assert served() == MINI_4O  # warms every cache on the way
    assert served() == MINI_4O
    put(http, "frontend", model="gpt-4.1-mini")
    assert served() == MINI_41
    assert http.post("/v1/aliases/frontend/rollback").status_code == 200
    assert served() == MINI_4O
    assert http.post("/v1/aliases/frontend/rollback", json={"version": 2}).status_code == 200
    assert served() == MINI_41
    assert http.delete("/v1/aliases/frontend").status_code == 200
    with pytest.raises(Exception) as raised:
        served()
    assert getattr(raised.value, "status_code", None) == 404


async def _models_of(api: AsyncOpenAI, calls: list[dict[str, Any]], concurrency: int = 16) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(extra: dict[str, Any]) -> str:
        async with gate:
            reply = await api.chat.completions.create(model="canary", messages=HELLO, **extra)  # type: ignore[arg-type]
            return reply.model

    try:
        return await asyncio.gather(*(one(extra) for extra in calls))
    finally:
        await api.close()


def test_a_90_10_split_holds_within_three_points_over_2000_calls(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    put(client(stack.api_url, key), "canary", targets=SPLIT)
    served = Counter(asyncio.run(_models_of(async_sdk(stack, key), [{}] * 2000)))
    assert set(served) == {MINI_4O, MINI_41}
    assert abs(served[MINI_41] / 2000 - 0.10) <= 0.03, served


def test_a_user_stays_on_one_target(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    put(
        http,
        "canary",
        targets=[{"model": "gpt-4o-mini", "weight": 50}, {"model": "gpt-4.1-mini", "weight": 50}],
    )
    users = [f"user-{i}" for i in range(40)]
    calls = [{"user": u} for u in users for _ in range(5)]
    served = asyncio.run(_models_of(async_sdk(stack, key), calls))
    by_user: dict[str, set[str]] = {}
    for extra, model in zip(calls, served, strict=True):
        by_user.setdefault(extra["user"], set()).add(model)
    assert all(len(models) == 1 for models in by_user.values()), by_user
    # 40 users on a 50/50 split: both targets get users (all on one side: p = 2 * 0.5**40).
    assert {next(iter(m)) for m in by_user.values()} == {MINI_4O, MINI_41}
    # Asked again, in another order of arrival, every user lands where it did before.
    again = asyncio.run(_models_of(async_sdk(stack, key), [{"user": u} for u in reversed(users)]))
    assert again == [next(iter(by_user[u])) for u in reversed(users)]


def test_models_lists_aliases_next_to_models(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    put(http, "zeta", targets=SPLIT)
    put(http, "alpha", model="gpt-4.1-mini")
    listed = {m.id: m for m in sdk(stack, key).models.list()}
    assert {"alpha", "zeta", "gpt-4o-mini-2024-07-18"} <= set(listed)
    zeta = listed["zeta"].model_dump()
    assert zeta["alias"] is True and [t["model"] for t in zeta["targets"]] == ["gpt-4o-mini", "gpt-4.1-mini"]
    http.delete("/v1/aliases/zeta")
    assert "zeta" not in {m.id for m in sdk(stack, key).models.list()}


def test_aliases_belong_to_one_project(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    owner_key, stranger_key = make_key(), make_key()
    owner, stranger = client(stack.api_url, owner_key), client(stack.api_url, stranger_key)
    put(owner, "shared-name", model="gpt-4o-mini")
    put(owner, "mine", model="gpt-4o-mini")
    put(owner, "mine", model="gpt-4.1-mini")

    for response in (
        stranger.get("/v1/aliases/mine"),
        stranger.get("/v1/aliases/mine/versions"),
        stranger.post("/v1/aliases/mine/rollback"),
        stranger.delete("/v1/aliases/mine"),
    ):
        assert error_code(response) == (404, "alias_not_found"), response.text
    assert stranger.get("/v1/aliases").json()["data"] == []
    chat = stranger.post("/v1/chat/completions", json={"model": "mine", "messages": HELLO})
    assert error_code(chat) == (404, "model_not_found")
    assert "mine" not in {m.id for m in sdk(stack, stranger_key).models.list()}

    # The same name in another project is another alias, routed on its own.
    assert put(stranger, "shared-name", model="gpt-4.1-mini")["version"] == 1
    assert _served_sync(sdk(stack, stranger_key), "shared-name", stream=False) == MINI_41
    assert _served_sync(sdk(stack, owner_key), "shared-name", stream=False) == MINI_4O
    assert owner.get("/v1/aliases/mine").json()["version"] == 2


def test_a_split_can_send_part_of_the_traffic_to_a_tune(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    dataset = wait_dataset(
        http, upload_dataset(http, HUATUO, preset="huatuo", sample_size="20", seed="1")["id"]
    )
    assert dataset["status"] == "ready", dataset
    created = http.post(
        "/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-4o-mini", "n_epochs": 1}
    )
    assert created.status_code == 202, created.text
    tune = wait_tune(http, created.json()["id"])
    assert tune["status"] == "succeeded", tune
    tuned = tune["fine_tuned_model"]
    with session_scope() as session:
        failed = Tune(
            id=new_id("tune"),
            project_id=auth.authenticate(session, key).project_id,
            dataset_id=dataset["id"],
            status="failed",
            base_model=MINI_4O,
            provider="sandbox",
        )
        session.add(failed)

    half = {"weight": 50}
    refused = http.put(
        "/v1/aliases/canary", json={"targets": [{"model": tune["id"], **half}, {"model": failed.id, **half}]}
    )
    assert error_code(refused) == (400, "target_not_ready")
    assert "failed" in refused.json()["error"]["message"]
    same = http.put(
        "/v1/aliases/canary", json={"targets": [{"model": tune["id"], **half}, {"model": tuned, **half}]}
    )
    assert error_code(same) == (400, "duplicate_target")

    put(http, "canary", targets=[{"model": tune["id"], **half}, {"model": "gpt-4o-mini", **half}])
    served = Counter(asyncio.run(_models_of(async_sdk(stack, key), [{}] * 100)))
    assert set(served) == {tuned, MINI_4O}, served

    stranger = client(stack.api_url, make_key())
    for model in (tune["id"], tuned):
        assert error_code(stranger.put("/v1/aliases/canary", json={"model": model})) == (
            400,
            "unknown_target",
        )


def test_concurrent_writes_keep_versions_gapless(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()

    def write(i: int) -> int:
        with client(stack.api_url, key) as http:
            body = {
                "targets": [
                    {"model": "gpt-4o-mini", "weight": 100 + i},
                    {"model": "gpt-4.1-mini", "weight": 10},
                ]
            }
            return http.put("/v1/aliases/race", json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        # Racing creates: one wins, a loser may get 409 alias_conflict (retry), never a 500.
        created = list(pool.map(write, range(16)))
        assert set(created) <= {200, 409} and 200 in created, created
        # Racing changes of an existing alias are serialized: each is a version of its own.
        changed = list(pool.map(write, range(100, 124)))
        assert set(changed) == {200}, changed
    versions = (
        client(stack.api_url, key).get("/v1/aliases/race/versions", params={"limit": 1000}).json()["data"]
    )
    expected = created.count(200) + len(changed)
    assert [v["version"] for v in versions] == list(range(expected, 0, -1))
