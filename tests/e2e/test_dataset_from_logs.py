"""`POST /v1/datasets/from-logs`: logged conversations become a chat dataset, prepared by the same
pipeline as an upload. Logs are written straight to the table here (as the gateway's batched
writer stores them), except in the last test, which chats through a logging alias."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from openai import OpenAI
from sqlalchemy import func, select

from shared import auth
from shared.db import session_scope
from shared.ids import new_id
from shared.models import ChatLog
from tests.e2e.story import client, wait_dataset
from tests.support.procs import Proc, free_port, wait_for, wait_http

MINI_4O = "gpt-4o-mini-2024-07-18"
MINI_41 = "gpt-4.1-mini-2025-04-14"
NOW = datetime.now(UTC)


# The pipeline refuses a dataset of fewer than 10 examples, so every kind of log comes 10 times.
COPIES = 10


def project_of(key: str) -> str:
    with session_scope() as session:
        return auth.authenticate(session, key).project_id


def log_row(
    project_id: str, *, messages: list[dict[str, Any]], response: Any, ago: timedelta, **fields: Any
) -> ChatLog:
    return ChatLog(
        id=new_id("clog"),
        project_id=project_id,
        key_id="key_test",
        messages=messages,
        response=response,
        created_at=NOW - ago,
        **{"alias": None, "model": MINI_4O, "user": None, **fields},
    )


def answer(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def seed(key: str) -> None:
    """Five kinds of log, `COPIES` of each (`A1-0` … `A1-9` and so on); answers name their kind."""
    project = project_of(key)
    rows = []
    for i in range(COPIES):
        s = timedelta(seconds=i)
        rows += [
            log_row(
                project,
                messages=[{"role": "user", "content": f"Q1-{i}"}],
                response=answer(f"A1-{i}"),
                ago=timedelta(hours=1) + s,
                alias="support",
                user="u1",
            ),
            log_row(
                project,
                messages=[{"role": "system", "content": "S"}, {"role": "user", "content": f"Q2-{i}"}],
                response=answer(f"A2-{i}"),
                ago=timedelta(minutes=30) + s,
                alias="support",
                model=MINI_41,
                user="u2",
            ),
            # The newest logs have no answer (the upstream failed): passed over, even by `limit`.
            log_row(
                project,
                messages=[{"role": "user", "content": f"Q3-{i}"}],
                response=None,
                ago=timedelta(minutes=1) + s,
                alias="support",
                user="u1",
            ),
            # Older, another alias: a `developer` message, the answer stored as a whole completion.
            log_row(
                project,
                messages=[
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": f"Q4-{i}"},
                ],
                response={"choices": [{"index": 0, "message": {**answer(f"A4-{i}"), "refusal": None}}]},
                ago=timedelta(days=3) + s,
                alias="other",
            ),
            # Multi-turn, with response-only fields on the earlier assistant turn.
            log_row(
                project,
                messages=[
                    {"role": "user", "content": f"Q5a-{i}"},
                    {"role": "assistant", "content": f"A5a-{i}", "refusal": None, "annotations": []},
                    {"role": "user", "content": f"Q5b-{i}"},
                ],
                response=answer(f"A5-{i}"),
                ago=timedelta(minutes=10) + s,
                alias="support",
                user="u1",
            ),
        ]
    with session_scope() as session:
        session.add_all(rows)


def build(http: httpx.Client, **body: Any) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    created = http.post("/v1/datasets/from-logs", json=body)
    assert created.status_code == 202, created.text
    assert created.headers["location"] == f"/v1/datasets/{created.json()['id']}"
    assert created.json()["options"]["preset"] == "chat"
    dataset = wait_dataset(http, created.json()["id"])
    assert dataset["status"] == "ready", (dataset["error"], dataset["report"])
    examples = []
    for split in ("train", "validation"):
        content = http.get(f"/v1/datasets/{dataset['id']}/content", params={"split": split})
        examples += [orjson.loads(line)["messages"] for line in content.text.splitlines() if line.strip()]
    return dataset, examples


def kinds(examples: list[list[dict[str, Any]]]) -> dict[str, int]:
    """How many examples of each kind of log (`A1`, `A2`…), from their answers."""
    found: dict[str, int] = {}
    for messages in examples:
        kind = messages[-1]["content"].split("-")[0]
        found[kind] = found.get(kind, 0) + 1
    return found


def test_logs_become_a_chat_dataset_with_filters(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    seed(key)
    http = client(stack.api_url, key)

    dataset, examples = build(http, alias="support")
    assert dataset["report"]["examples"] == 30 and dataset["report"]["quote"]["billed_tokens"] > 0
    assert kinds(examples) == {"A1": 10, "A2": 10, "A5": 10}
    multi = next(m for m in examples if m[-1]["content"] == "A5-3")
    assert multi == [
        {"role": "user", "content": "Q5a-3"},
        {"role": "assistant", "content": "A5a-3"},
        {"role": "user", "content": "Q5b-3"},
        {"role": "assistant", "content": "A5-3"},
    ]

    assert kinds(build(http, alias="support", user="u1")[1]) == {"A1": 10, "A5": 10}
    # A base model's short name finds the snapshot the logs hold.
    assert kinds(build(http, model="gpt-4o-mini")[1]) == {"A1": 10, "A4": 10, "A5": 10}
    window = {
        "since": (NOW - timedelta(hours=2)).isoformat(),
        "until": (NOW - timedelta(minutes=20)).isoformat(),
    }
    assert kinds(build(http, **window)[1]) == {"A1": 10, "A2": 10}
    since = int((NOW - timedelta(days=1)).timestamp())
    assert kinds(build(http, since=since)[1]) == {"A1": 10, "A2": 10, "A5": 10}
    assert kinds(build(http, alias="support", limit=10)[1]) == {"A5": 10}

    _, other = build(http, alias="other", system_prompt="Be kind.")
    # `developer` is written as `system`, so the conversation keeps its own prompt.
    assert sorted(other, key=str)[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q4-0"},
        answer("A4-0"),
    ]
    _, prompted = build(http, alias="support", user="u1", system_prompt="Be kind.")
    assert len(prompted) == 20 and all(m[0] == {"role": "system", "content": "Be kind."} for m in prompted)

    split, _ = build(http, alias="support", validation_fraction=0.3, seed=3, sample_size=20)
    assert split["report"]["examples"] == 20
    assert split["report"]["train_examples"] + split["report"]["validation_examples"] == 20
    assert split["report"]["validation_examples"] >= 1


def test_no_matching_logs_is_a_422_and_bad_filters_are_400(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    owner, stranger = make_key(), make_key()
    seed(owner)
    http = client(stack.api_url, owner)
    for body in ({"alias": "nope"}, {"user": "u9"}, {"since": NOW.isoformat()}, {"model": "gpt-4.1"}):
        response = http.post("/v1/datasets/from-logs", json=body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "no_logs" and "log_requests" in error["message"]
    # Another project's logs are invisible.
    response = client(stack.api_url, stranger).post("/v1/datasets/from-logs", json={})
    assert (response.status_code, response.json()["error"]["code"]) == (422, "no_logs")

    for body, code in (
        ({"since": NOW.isoformat(), "until": (NOW - timedelta(hours=1)).isoformat()}, "invalid_time_range"),
        ({"since": "2026-11-25T12:00:00", "until": "2026-11-25T11:00:00+00:00"}, "invalid_time_range"),
        ({"limit": 0}, "invalid_request"),
        ({"limit": 100_001}, "invalid_request"),
        ({"validation_fraction": 1}, "invalid_request"),
        ({"target_model": "gpt-9"}, "unknown_model"),
        ({"preset": "alpaca"}, "invalid_request"),
        ({"since": "yesterday"}, "invalid_request"),
    ):
        response = http.post("/v1/datasets/from-logs", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), (body, response.text)
    assert http.get("/v1/datasets").json()["data"] == []


def test_chat_through_a_logging_alias_then_build_a_dataset(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = client(stack.api_url, key)
    assert (
        http.put("/v1/aliases/logged", json={"model": "gpt-4o-mini", "log_requests": True}).status_code == 200
    )
    assert http.put("/v1/aliases/quiet", json={"model": "gpt-4o-mini"}).status_code == 200
    sdk = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    replies: dict[str, str] = {}
    for i in range(COPIES):
        stream = i % 2 == 1
        question = f"Question number {i}?"
        messages = [{"role": "user", "content": question}]
        if stream:
            chunks = sdk.chat.completions.create(model="logged", messages=messages, stream=True, user="u1")  # type: ignore[arg-type]
            replies[question] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = sdk.chat.completions.create(model="logged", messages=messages, user="u1")  # type: ignore[arg-type]
            replies[question] = reply.choices[0].message.content or ""
        if i < 2:
            sdk.chat.completions.create(model="quiet", messages=messages)  # type: ignore[arg-type]

    project = project_of(key)

    def logged() -> int:
        with session_scope() as session:
            return session.scalar(select(func.count()).where(ChatLog.project_id == project)) or 0

    wait_for(lambda: logged() >= COPIES, 30, what="the gateway to write its chat logs")
    dataset, examples = build(http, alias="logged", user="u1")
    assert dataset["report"]["examples"] == COPIES
    assert {m[0]["content"]: m[1]["content"] for m in examples} == replies
    assert all([m["role"] for m in messages] == ["user", "assistant"] for messages in examples)
    assert logged() == COPIES  # the alias without log_requests wrote nothing
    response = http.post("/v1/datasets/from-logs", json={"alias": "quiet"})
    assert (response.status_code, response.json()["error"]["code"]) == (422, "no_logs")


def test_logs_over_the_upload_limit_answer_413(database, make_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # An API process of its own with a 1000-byte upload limit (the shared stack has the default).
    port = free_port()
    api = Proc(
        "api-small-uploads", ["api", "--port", str(port)], {"TUNEFORGE_UPLOAD_MAX_BYTES": "1000"}, tmp_path
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", api)
        key = make_key()
        seed(key)
        http = client(f"http://127.0.0.1:{port}", key)
        response = http.post("/v1/datasets/from-logs", json={"alias": "support"})
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("payload_too_large", "limit")
        assert "30 matching conversations" in error["message"]
        assert http.post("/v1/datasets/from-logs", json={"alias": "support", "limit": 2}).status_code == 202
    finally:
        api.stop()
