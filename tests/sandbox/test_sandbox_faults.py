"""Request faults through the official SDK against a real uvicorn server: 429 + Retry-After, 5xx
bursts, slow answers, dropped and reset connections; the control plane, the header, and the stats.

The faults get their own server, so a rule left behind by a failing test cannot reach other tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from sandbox.faults import FaultSpecError, parse_header_spec
from tests.sandbox.harness import AUTH, TIME_SCALE, Sandbox, huatuo_rows, jsonl, serve, to_example

MODELS = "GET /v1/models"
CREATE = "POST /v1/fine_tuning/jobs"
RETRIEVE = "GET /v1/fine_tuning/jobs/{job_id}"


@pytest.fixture(scope="module")
def fsb() -> Iterator[Sandbox]:
    from sandbox.app import create_app

    with serve(create_app(time_scale=TIME_SCALE)) as running:
        yield running


@pytest.fixture(scope="module")
def control(fsb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{fsb.root_url}/sandbox", timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def training_file(fsb: Sandbox) -> str:
    content = jsonl([to_example(r) for r in huatuo_rows(10)])
    with OpenAI(api_key="sk-test", base_url=fsb.base_url, max_retries=0) as sdk:
        return sdk.files.create(file=("train.jsonl", content), purpose="fine-tune").id


@pytest.fixture(autouse=True)
def clean(control: httpx.Client) -> Iterator[None]:
    control.delete("/faults").raise_for_status()
    control.delete("/stats").raise_for_status()
    yield
    control.delete("/faults").raise_for_status()


@pytest.fixture
def sdk(fsb: Sandbox) -> Iterator[Any]:
    """`sdk(max_retries=…, timeout=…)`: an official client for the fault server."""
    made: list[OpenAI] = []

    def make(max_retries: int = 0, timeout: float = 10) -> OpenAI:
        made.append(
            OpenAI(api_key="sk-test", base_url=fsb.base_url, max_retries=max_retries, timeout=timeout)
        )
        return made[-1]

    yield make
    for client in made:
        client.close()


def add(control: httpx.Client, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    response = control.post("/faults", json=list(rules))
    assert response.status_code == 200, response.text
    return response.json()["data"]


def has(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    return {key: actual.get(key) for key in expected} == expected


def stats(control: httpx.Client) -> dict[str, Any]:
    return control.get("/stats").json()


def rule(control: httpx.Client, rule_id: str) -> dict[str, Any]:
    return next(r for r in control.get("/faults").json()["data"] if r["id"] == rule_id)


def create_job(client: OpenAI, training_file: str, tag: str, model: str = "gpt-4o-mini") -> Any:
    return client.fine_tuning.jobs.create(model=model, training_file=training_file, metadata={"case": tag})


def jobs_tagged(client: OpenAI, tag: str) -> list[Any]:
    return list(client.fine_tuning.jobs.list(metadata={"case": tag}))


# ---- 429 and Retry-After -------------------------------------------------------------------------
def test_429_with_retry_after_ms_is_retried_after_the_wait(control: httpx.Client, sdk: Any) -> None:
    (r,) = add(
        control,
        {"method": "GET", "path": "/v1/models", "action": "status", "status": 429, "retry_after_ms": 300},
    )
    assert sdk(max_retries=2).models.list().data
    counts = stats(control)
    assert counts["requests"] == {MODELS: 2} and counts["faults"] == {MODELS: 1}
    assert has(rule(control, r["id"]), {"fired": 1, "matched": 2, "remaining": 0})
    first, second = control.get("/requests").json()["data"]
    assert first["status"] == 429 and first["fault"] == {"source": r["id"], "action": "status", "status": 429}
    assert second["status"] == 200 and second["fault"] is None
    assert second["at"] - first["at"] >= 0.3  # the SDK waited for retry-after-ms


def test_retry_after_beyond_120_s_is_not_retried(control: httpx.Client, sdk: Any) -> None:
    add(control, {"path": "/v1/models", "action": "status", "status": 429, "retry_after": 121, "times": None})
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(max_retries=2).models.list()
    assert time.monotonic() - started < 2
    assert caught.value.response.headers["retry-after"] == "121"
    assert caught.value.code == "rate_limit_exceeded"
    assert stats(control)["requests"] == {MODELS: 1}


def test_status_faults_answer_with_the_openai_envelope(fsb: Sandbox, control: httpx.Client) -> None:
    r429, _, _ = add(
        control,
        {
            "method": "GET",
            "path": "/v1/files",
            "action": "status",
            "status": 429,
            "retry_after": 3,
            "retry_after_ms": 1500,
        },
        {"method": "GET", "path": "/v1/files", "action": "status", "status": 503, "should_retry": False},
        {"method": "GET", "path": "/v1/files", "action": "status", "status": 408, "code": "custom"},
    )
    with httpx.Client(base_url=fsb.base_url, headers=AUTH) as http:
        first, second, third, fourth = (http.get("/files") for _ in range(4))
    assert first.status_code == 429 and first.json() == {
        "error": {
            "message": "Rate limit reached for requests (sandbox fault). Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert first.headers["retry-after"] == "3" and first.headers["retry-after-ms"] == "1500"
    assert first.headers["x-sandbox-fault-applied"] == r429["id"]
    assert first.headers["x-request-id"].startswith("req_")  # the bearer layer still wraps faults
    assert second.status_code == 503 and second.headers["x-should-retry"] == "false"
    assert second.json()["error"]["type"] == "server_error"
    assert second.json()["error"]["code"] == "service_unavailable"
    assert "retry-after" not in second.headers and "retry-after-ms" not in second.headers
    assert third.status_code == 408 and third.json()["error"]["code"] == "custom"
    assert fourth.status_code == 200
    assert stats(control)["requests"] == {"GET /v1/files": 4}


# ---- 5xx bursts, times, skip, probability ------------------------------------------------------------
def test_a_500_burst_of_two_then_success_creates_one_job(
    control: httpx.Client, sdk: Any, training_file: str
) -> None:
    add(
        control,
        {
            "method": "POST",
            "path": "/v1/fine_tuning/jobs",
            "action": "status",
            "status": 500,
            "times": 2,
            "retry_after_ms": 1,
        },
    )
    client = sdk(max_retries=2)
    job = create_job(client, training_file, "burst")
    assert [j.id for j in jobs_tagged(client, "burst")] == [job.id]
    counts = stats(control)
    assert counts["requests"][CREATE] == 3 and counts["faults"] == {CREATE: 2}
    assert counts["jobs"]["by_metadata"]["case=burst"] == 1  # a status fault never runs the handler


def test_a_burst_longer_than_the_retries_surfaces_the_error(control: httpx.Client, sdk: Any) -> None:
    add(control, {"path": "/v1/models", "action": "status", "status": 502, "times": 3, "retry_after_ms": 1})
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(max_retries=2).models.list()
    assert caught.value.status_code == 502 and caught.value.code == "bad_gateway"
    assert sdk(max_retries=0).models.list().data  # the rule is used up
    assert stats(control)["requests"] == {MODELS: 4}


def test_times_limits_a_rule_and_null_means_forever(control: httpx.Client, sdk: Any) -> None:
    limited, forever = add(
        control,
        {"method": "GET", "path": "/v1/models", "action": "status", "status": 503, "times": 2},
        {"method": "GET", "path": "/v1/files", "action": "status", "status": 500, "times": None},
    )
    client = sdk(max_retries=0)
    outcomes = []
    for _ in range(3):
        try:
            client.models.list()
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)
    assert outcomes == [503, 503, 200]
    for _ in range(4):
        with pytest.raises(openai.InternalServerError):
            client.files.list()
    assert has(rule(control, limited["id"]), {"times": 2, "fired": 2, "matched": 3, "remaining": 0})
    assert has(rule(control, forever["id"]), {"times": None, "fired": 4, "remaining": None})


def test_skip_and_seeded_probability_repeat_exactly(control: httpx.Client, sdk: Any) -> None:
    client = sdk(max_retries=0)

    def run(n: int) -> list[bool]:
        failed = []
        for _ in range(n):
            try:
                client.models.list()
                failed.append(False)
            except openai.APIStatusError:
                failed.append(True)
        return failed

    add(control, {"path": "/v1/models", "action": "status", "status": 500, "skip": 2})
    assert run(4) == [False, False, True, False]
    control.delete("/faults")
    spec = {"path": "/v1/models", "action": "status", "status": 500, "times": None, "probability": 0.5}
    (first,) = add(control, spec | {"seed": 7})
    pattern = run(24)
    assert 0 < sum(pattern) < 24 and rule(control, first["id"])["fired"] == sum(pattern)
    control.delete("/faults")
    add(control, spec | {"seed": 7})
    assert run(24) == pattern


# ---- slow answers ------------------------------------------------------------------------------------
def test_delay_makes_the_sdk_time_out(control: httpx.Client, sdk: Any) -> None:
    add(control, {"method": "GET", "path": "/v1/models", "action": "delay", "delay_s": 1.5})
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        sdk(max_retries=0, timeout=0.5).models.list()
    assert time.monotonic() - started < 1.4
    assert sdk(max_retries=0, timeout=0.5).models.list().data  # one delay only


def test_a_stalled_body_times_out_after_the_headers(control: httpx.Client, sdk: Any) -> None:
    add(control, {"path": "/v1/models", "action": "stall_body", "delay_s": 1.5})
    with pytest.raises(openai.APITimeoutError):
        sdk(max_retries=0, timeout=0.5).models.list()
    assert control.get("/requests").json()["data"][0]["status"] == 200  # the headers went out


def test_a_timed_out_create_still_creates_the_job(
    control: httpx.Client, sdk: Any, training_file: str
) -> None:
    add(control, {"method": "POST", "path": "/v1/fine_tuning/jobs", "action": "delay", "delay_s": 0.8})
    with pytest.raises(openai.APITimeoutError):
        create_job(sdk(max_retries=0, timeout=0.3), training_file, "slow-create")
    client = sdk()
    deadline = time.monotonic() + 5
    while not jobs_tagged(client, "slow-create"):
        assert time.monotonic() < deadline, "the delayed create never happened"
        time.sleep(0.05)
    assert len(jobs_tagged(client, "slow-create")) == 1


# ---- dropped and reset connections -----------------------------------------------------------------
def test_drop_after_create_raises_a_connection_error_but_the_job_exists(
    control: httpx.Client, sdk: Any, training_file: str
) -> None:
    (r,) = add(control, {"method": "POST", "path": "/v1/fine_tuning/jobs", "action": "drop_after"})
    client = sdk(max_retries=0)
    with pytest.raises(openai.APIConnectionError) as caught:
        create_job(client, training_file, "dropped")
    assert not isinstance(caught.value, openai.APITimeoutError)
    (job,) = jobs_tagged(client, "dropped")
    assert job.status in ("validating_files", "queued", "running", "succeeded")
    counts = stats(control)
    assert counts["requests"][CREATE] == 1 and counts["faults"] == {CREATE: 1}
    (entry,) = [e for e in control.get("/requests").json()["data"] if e["method"] == "POST"]
    assert entry["status"] is None and entry["fault"] == {"source": r["id"], "action": "drop_after"}


def test_a_blind_retry_after_a_drop_creates_a_duplicate(
    control: httpx.Client, sdk: Any, training_file: str
) -> None:
    # Why Tuneforge looks its job up by metadata before creating again: the SDK's own retry does not.
    add(control, {"method": "POST", "path": "/v1/fine_tuning/jobs", "action": "drop_after"})
    client = sdk(max_retries=1)
    created = create_job(client, training_file, "blind-retry")
    assert len(jobs_tagged(client, "blind-retry")) == 2 and created.id in {
        j.id for j in jobs_tagged(client, "blind-retry")
    }
    assert stats(control)["requests"][CREATE] == 2


def test_drop_after_an_upload_keeps_the_file(control: httpx.Client, sdk: Any) -> None:
    add(control, {"method": "POST", "path": "/v1/files", "action": "drop_after"})
    before = stats(control)["files"].get("fine-tune", 0)
    with pytest.raises(openai.APIConnectionError):
        sdk().files.create(file=("again.jsonl", jsonl([to_example(huatuo_rows(1)[0])])), purpose="fine-tune")
    assert stats(control)["files"]["fine-tune"] == before + 1


def test_reset_does_not_run_the_handler(control: httpx.Client, sdk: Any, training_file: str) -> None:
    add(control, {"method": "POST", "path": "/v1/fine_tuning/jobs", "action": "reset"})
    client = sdk(max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        create_job(client, training_file, "reset")
    assert jobs_tagged(client, "reset") == []
    assert stats(control)["faults"] == {CREATE: 1}


# ---- the per-request header -------------------------------------------------------------------------
def test_header_faults_apply_to_every_request_that_carries_them(
    fsb: Sandbox, control: httpx.Client, sdk: Any
) -> None:
    with pytest.raises(openai.RateLimitError):
        sdk(max_retries=2).models.list(extra_headers={"x-sandbox-fault": "429; retry_after_ms=1"})
    assert stats(control)["requests"] == {MODELS: 3}  # the SDK resends its headers on each retry
    with httpx.Client(base_url=fsb.base_url, headers=AUTH) as http:
        answer = http.get("/files", headers={"x-sandbox-fault": '{"status": 503, "retry_after": 2}'})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
        assert answer.headers["x-sandbox-fault-applied"] == "header"
        bad = http.get("/files", headers={"x-sandbox-fault": "teapot"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-sandbox-fault"
        # The bearer check comes first: no key, no fault, not counted.
        anonymous = httpx.get(f"{fsb.base_url}/files", headers={"x-sandbox-fault": "503"})
        assert anonymous.status_code == 401
    with pytest.raises(openai.APITimeoutError):
        sdk(timeout=0.3).models.list(extra_headers={"x-sandbox-fault": "delay=1"})
    with pytest.raises(openai.APIConnectionError):
        sdk().models.list(extra_headers={"x-sandbox-fault": "reset"})
    assert stats(control)["requests"] == {MODELS: 5, "GET /v1/files": 2}


def test_a_header_fault_takes_precedence_over_rules(control: httpx.Client, sdk: Any) -> None:
    (r,) = add(control, {"path": "/v1/models", "action": "status", "status": 500})
    with pytest.raises(openai.RateLimitError):
        sdk().models.list(extra_headers={"x-sandbox-fault": "429"})
    assert rule(control, r["id"])["matched"] == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("429", {"action": "status", "status": 429}),
        ("429; retry_after_ms=1", {"action": "status", "status": 429, "retry_after_ms": 1}),
        (
            "status=503; retry-after=30; should_retry=false",
            {"status": 503, "retry_after": 30, "should_retry": False},
        ),
        ("delay=2.5", {"action": "delay", "delay_s": 2.5}),
        ("stall_body; delay=1", {"action": "stall_body", "delay_s": 1}),
        ("drop_after", {"action": "drop_after"}),
        ("reset; delay=0.2", {"action": "reset", "delay_s": 0.2}),
        ('{"status": 500, "code": "boom"}', {"action": "status", "status": 500, "code": "boom"}),
    ],
)
def test_header_spec_syntax(spec: str, expected: dict[str, Any]) -> None:
    parsed = parse_header_spec(spec).model_dump()
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize(
    "spec",
    ["", "teapot", "200", "delay", "drop_after; status=500", "429; times=2", "{not json", "stall_body"],
)
def test_bad_header_specs_are_refused(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_header_spec(spec)


# ---- the control plane -----------------------------------------------------------------------------
def test_clearing_rules(control: httpx.Client, sdk: Any) -> None:
    first, second = add(
        control,
        {"path": "/v1/models", "action": "status", "status": 500, "times": None},
        {"path": "/v1/files*", "action": "status", "status": 500, "times": None},
    )
    client = sdk(max_retries=0)
    assert control.delete(f"/faults/{first['id']}").json() == {"id": first["id"], "deleted": True}
    assert client.models.list().data
    with pytest.raises(openai.InternalServerError):
        client.files.list()
    assert control.delete("/faults").json() == {"deleted": 1}
    assert control.get("/faults").json() == {"object": "list", "data": []}
    assert client.files.list() is not None
    missing = control.delete("/faults/flt_nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "rule_id"


def test_rules_scoped_by_model(control: httpx.Client, sdk: Any, training_file: str) -> None:
    client = sdk(max_retries=0)
    job = create_job(client, training_file, "scoped")
    other = create_job(client, training_file, "scoped-other", model="gpt-4.1-nano")
    add(
        control,
        {
            "path": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "action": "status",
            "status": 503,
            "times": None,
        },
        {
            "path": "/v1/fine_tuning/jobs/*",
            "model": "gpt-4o-mini",
            "action": "status",
            "status": 500,
            "times": None,
        },
        {
            "method": "GET",
            "path": "/v1/models/{model}",
            "model": "gpt-4o-mini-2024-07-18",
            "action": "status",
            "status": 429,
            "times": None,
        },
    )
    ask = [{"role": "user", "content": "hello"}]
    assert client.chat.completions.create(model="gpt-4.1-mini", messages=ask).choices
    for name in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"):  # alias and snapshot are one model
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=name, messages=ask)
        assert caught.value.status_code == 503
    with pytest.raises(openai.InternalServerError):
        client.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.InternalServerError):
        client.fine_tuning.jobs.list_events(job.id)
    assert client.fine_tuning.jobs.retrieve(other.id).id == other.id
    with pytest.raises(openai.RateLimitError):
        client.models.retrieve("gpt-4o-mini")
    assert client.models.retrieve("gpt-4.1-nano").id == "gpt-4.1-nano"
    assert stats(control)["faults"] == {
        "POST /v1/chat/completions": 2,
        RETRIEVE: 1,
        "GET /v1/fine_tuning/jobs/{job_id}/events": 1,
        "GET /v1/models/{model}": 1,
    }


@pytest.mark.parametrize(
    ("rules", "param", "fragment"),
    [
        ({"path": "/v1/models"}, "rules[0]", "action"),
        ({"action": "status"}, "rules[0]", "'status' is required"),
        ({"action": "status", "status": 200}, "rules[0]", "status"),
        ({"action": "status", "status": 500, "path": "/models"}, "rules[0]", "must start with /v1"),
        ({"action": "delay"}, "rules[0]", "delay_s"),
        ({"action": "delay", "delay_s": 1, "retry_after": 3}, "rules[0]", "only apply to action 'status'"),
        ({"action": "reset", "colour": "red"}, "rules[0]", "colour"),
        ({"action": "reset", "times": 0}, "rules[0]", "times"),
        ({"action": "reset", "probability": 0}, "rules[0]", "probability"),
        ([{"action": "reset"}, {"action": "explode"}], "rules[1]", "action"),
        ([], "rules", "no rules"),
    ],
)
def test_bad_rules_are_refused_whole(control: httpx.Client, rules: Any, param: str, fragment: str) -> None:
    answer = control.post("/faults", json=rules)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and fragment in error["message"], error
    assert control.get("/faults").json()["data"] == []  # nothing half-added


def test_rules_can_be_posted_singly_or_wrapped(control: httpx.Client) -> None:
    single = control.post("/faults", json={"action": "reset", "path": "/v1/models"}).json()["data"]
    wrapped = control.post("/faults", json={"rules": [{"action": "reset"}]}).json()["data"]
    assert [r["id"] for r in control.get("/faults").json()["data"]] == [single[0]["id"], wrapped[0]["id"]]
    assert has(
        single[0],
        {
            "object": "sandbox.fault_rule",
            "method": None,
            "path": "/v1/models",
            "model": None,
            "times": 1,
            "skip": 0,
            "probability": 1.0,
            "remaining": 1,
            "matched": 0,
            "fired": 0,
        },
    )


def test_stats_reset_keeps_rules_and_ignores_the_control_plane(control: httpx.Client, sdk: Any) -> None:
    (r,) = add(control, {"path": "/v1/models", "action": "status", "status": 500, "times": None})
    with pytest.raises(openai.InternalServerError):
        sdk().models.list()
    assert stats(control)["total_requests"] == 1 and stats(control)["total_faults"] == 1
    assert control.delete("/stats").json() == {"reset": True}
    assert has(stats(control), {"requests": {}, "faults": {}, "total_requests": 0, "total_faults": 0})
    assert control.get("/requests").json()["data"] == []
    assert rule(control, r["id"])["fired"] == 1


def test_without_uvicorn_a_drop_falls_back_to_a_cut_response() -> None:
    # In-process (no transport to abort) the drop still happens after the handler, then the app raises.
    from starlette.testclient import TestClient

    from sandbox.app import create_app
    from sandbox.fault_injection import ConnectionDropped

    app = create_app(time_scale=TIME_SCALE)
    with TestClient(app, headers=AUTH) as http, pytest.raises(ConnectionDropped):
        http.get("/v1/models", headers={"x-sandbox-fault": "drop_after"})
    assert app.state.faults.stats()["faults"] == {MODELS: 1}
