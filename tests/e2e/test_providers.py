"""Provider accounts end to end: each adapter against a sandbox that behaves like that provider
(OpenAI, a plain OpenAI-compatible server, Azure OpenAI with its URL shape, api-version,
api-key and deployment step), the OpenAI cutoff and a shutdown date under a controllable clock
(an API process started with TUNEFORGE_NOW), a retune that moves an alias, and a canary key that
never shows up in a response, a log file or a database dump (test_provider_lifecycle.py, which
runs first, uses the same canary)."""

from __future__ import annotations

import subprocess

import httpx
import openai

from tests.conftest import TEST_ENV
from tests.e2e.provider_support import (
    API_VERSION,
    CANARY,
    LOG_DIR,
    MANAGEMENT_CANARY,
    QUESTION,
    add_provider,
    azure_body,
    azure_calls,
    error_code,
    http_for,
    management_calls,
    ready_dataset,
    tune,
)
from tests.e2e.story import wait_tune
from tests.support.procs import free_port, wait_for


def test_provider_accounts_crud_and_refusals(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = http_for(stack.api_url, make_key())
    created = add_provider(http, name="oai", kind="openai", base_url=f"{stack.sandbox_url}/v1")
    assert created["key_hint"] == "…" + CANARY[-4:] and "api_key" not in created
    assert created["capabilities"]["no_new_jobs_from"] == "2027-01-06"
    assert {m["id"] for m in created["capabilities"]["models"]} >= {"gpt-4o-mini-2024-07-18"}
    assert http.get("/v1/providers").json()["data"][0]["name"] == "oai"
    assert (
        error_code(
            http.post(
                "/v1/providers",
                json={
                    "name": "oai",
                    "kind": "openai",
                    "base_url": f"{stack.sandbox_url}/v1",
                    "api_key": CANARY,
                },
            )
        )
        == "provider_exists"
    )  # noqa: E501
    refusals = {
        # The schema refuses an unknown kind before the domain sees it.
        "invalid_request": {"name": "x", "kind": "bedrock", "base_url": stack.sandbox_url},
        "missing_api_version": {"name": "x", "kind": "azure_openai", "base_url": stack.sandbox_url},
        "provider_destination_forbidden": {
            "name": "x",
            "kind": "openai",
            "base_url": "http://169.254.169.254/v1",
        },
        "invalid_base_url": {"name": "x", "kind": "openai", "base_url": "file:///etc/passwd"},
        "invalid_provider_name": {"name": "default", "kind": "openai", "base_url": stack.sandbox_url},
        "invalid_provider_options": {
            "name": "x",
            "kind": "openai",
            "base_url": stack.sandbox_url,
            "options": {"resource_name": "r"},
        },
    }
    for code, body in refusals.items():
        response = http.post("/v1/providers", json={"api_key": CANARY, **body})
        assert response.status_code == 400 and error_code(response) == code, (code, response.text)
    # Forbidden private address, whatever the spelling (not in the operator's allow-list).
    assert error_code(http.patch("/v1/providers/oai", json={"base_url": "http://10.1.2.3/v1"})) == (
        "provider_destination_forbidden"
    )
    rotated = http.patch("/v1/providers/oai", json={"api_key": CANARY + "-2", "default": True})
    assert rotated.status_code == 200 and rotated.json()["key_hint"] == "…" + (CANARY + "-2")[-4:]
    assert rotated.json()["is_default"] is True
    stranger = http_for(stack.api_url, make_key())
    assert stranger.get("/v1/providers/oai").status_code == 404
    assert error_code(tune(stranger, "ds_x", "oai")) in ("dataset_not_found", "unknown_provider")
    # Nobody listens there: reading its models is a clean 502, not a crash.
    add_provider(http, name="gone", kind="openai_compatible", base_url=f"http://127.0.0.1:{free_port()}/v1")
    unreachable = http.post("/v1/providers/gone/refresh")
    assert unreachable.status_code == 502 and error_code(unreachable) == "provider_unreachable"
    assert http.delete("/v1/providers/oai").json()["deleted"] is True
    assert http.get("/v1/providers/oai").status_code == 404


def test_openai_compatible_server_by_base_url(stack, make_key, compatible_sandbox) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = http_for(stack.api_url, key)
    add_provider(http, name="selfhosted", kind="openai_compatible", base_url=f"{compatible_sandbox}/v1")
    done = wait_tune(http, tune(http, ready_dataset(http), "selfhosted").json()["id"])
    assert done["status"] == "succeeded" and done["provider"] == "selfhosted", done
    jobs = httpx.get(f"{compatible_sandbox}/sandbox/stats").json()
    assert jobs["requests"].get("POST /v1/fine_tuning/jobs", 0) >= 1
    chat = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    before = (
        httpx.get(f"{compatible_sandbox}/sandbox/stats")
        .json()["requests"]
        .get("POST /v1/chat/completions", 0)
    )
    assert chat.chat.completions.create(model=done["id"], messages=QUESTION).choices[0].message.content
    # A base model on a named provider: the request's "provider" field picks it.
    base = chat.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, extra_body={"provider": "selfhosted"}
    )
    assert base.choices[0].message.content
    after = httpx.get(f"{compatible_sandbox}/sandbox/stats").json()["requests"]["POST /v1/chat/completions"]
    assert after == before + 2


def test_azure_url_shape_api_version_and_deployment_step(stack, make_key, azure_sandbox) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    http = http_for(stack.api_url, key)
    add_provider(http, **azure_body("azure", azure_sandbox))
    done = wait_tune(http, tune(http, ready_dataset(http), "azure").json()["id"])
    assert done["status"] == "succeeded", done
    assert done["deployment"] and done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    events = [e["message"] for e in http.get(f"/v1/tunes/{done['id']}/events").json()["data"]]
    assert any(m.startswith("Deploying ") for m in events)
    calls = azure_calls(azure_sandbox)
    assert {c["path"] for c in calls} >= {"/openai/files", "/openai/fine_tuning/jobs"}
    assert all(c["api_version"] == API_VERSION and not c["bearer"] for c in calls)
    deploying = management_calls(azure_sandbox, done["deployment"])
    assert [c["method"] for c in deploying][:2] == ["GET", "PUT"] and len(deploying) >= 3
    assert not any(c["issued_token"] for c in deploying)  # the static management token
    chat = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    answer = chat.chat.completions.create(model=done["id"], messages=QUESTION)
    assert answer.choices[0].message.content
    streamed = list(
        chat.chat.completions.create(model=done["fine_tuned_model"], messages=QUESTION, stream=True)
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == answer.choices[0].message.content
    )
    served = [c for c in azure_calls(azure_sandbox) if c["path"].endswith("/chat/completions")]
    assert {c["path"] for c in served} == {f"/openai/deployments/{done['deployment']}/chat/completions"}
    assert len(served) == 2
    # Without the deployment (a fresh name), Azure answers 404: the step is what makes it serve.
    missing = httpx.post(
        f"{azure_sandbox}/openai/deployments/nothing-here/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": "k"},
        json={"messages": QUESTION},
    )
    assert missing.status_code == 404
    assert (
        httpx.get(f"{azure_sandbox}/openai/models", headers={"api-key": "k"}).status_code == 404
    )  # no api-version
    # A refreshed catalog keeps what the provider's GET /models says about shutdowns.
    refreshed = http.post("/v1/providers/azure/refresh")
    assert refreshed.status_code == 200, refreshed.text
    models = {m["id"]: m for m in refreshed.json()["capabilities"]["models"]}
    assert models["gpt-4o-mini-2024-07-18"]["shutdown_date"] == "2027-01-14"


def test_cutoff_and_shutdown_are_refused_with_alternatives(
    stack, make_key, future_api, azure_sandbox
) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    now = http_for(stack.api_url, key)
    later = http_for(future_api, key)
    add_provider(now, name="oai", kind="openai", base_url=f"{stack.sandbox_url}/v1")
    add_provider(now, **azure_body("azure", azure_sandbox))
    dataset_id = ready_dataset(now)

    refused = tune(later, dataset_id, "oai")
    assert refused.status_code == 400 and error_code(refused) == "provider_not_accepting_jobs", refused.text
    error = refused.json()["error"]
    assert "2027-01-06" in error["message"] and "azure" in error["message"]
    assert "azure" in error["alternatives"]["providers"] and error["as_of"] == "2027-01-15"
    assert later.get("/v1/providers/oai").json()["capabilities"]["accepts_jobs"] is False
    assert now.get("/v1/providers/oai").json()["capabilities"]["accepts_jobs"] is True
    # gpt-4o-mini shut down on 2027-01-14 where OpenAI's dates apply (the sandbox mirrors them).
    gone = tune(later, dataset_id, "sandbox")
    assert gone.status_code == 400 and error_code(gone) == "model_shut_down", gone.text
    assert "azure" in gone.json()["error"]["alternatives"]["providers"]
    # Today, before either date, the very same requests are accepted.
    for provider in ("oai", "sandbox"):
        accepted = tune(now, dataset_id, provider)
        assert accepted.status_code == 202, accepted.text
        wait_tune(now, accepted.json()["id"])
    # A model already past its shutdown date is refused on the real clock too.
    nano = tune(now, dataset_id, "oai", model="gpt-4.1-nano")
    assert nano.status_code == 400 and error_code(nano) == "model_shut_down"
    assert "gpt-4o-mini-2024-07-18" in nano.json()["error"]["alternatives"]["base_models"]


def test_retune_from_openai_to_azure_moves_the_alias(stack, make_key, future_api, azure_sandbox) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    now = http_for(stack.api_url, key)
    later = http_for(future_api, key)
    add_provider(now, name="oai", kind="openai", base_url=f"{stack.sandbox_url}/v1")
    add_provider(now, **azure_body("azure", azure_sandbox, principal=True))
    first = wait_tune(now, tune(now, ready_dataset(now), "oai").json()["id"])
    assert first["status"] == "succeeded", first
    assert now.put("/v1/aliases/medqa", json={"model": first["id"]}).status_code == 200

    # After the cutoff OpenAI takes no job: retuning there is refused, retuning to Azure works.
    assert error_code(later.post(f"/v1/tunes/{first['id']}/retune", json={"base_model": "gpt-4.1-mini"})) == (
        "provider_not_accepting_jobs"
    )
    started = later.post(f"/v1/tunes/{first['id']}/retune", json={"provider": "azure", "alias": "medqa"})
    assert started.status_code == 202, started.text
    second = started.json()
    assert second["retune_of"] == first["id"] and second["provider"] == "azure"
    assert second["dataset_id"] == first["dataset_id"] and second["base_model"] == first["base_model"]
    second = wait_tune(now, second["id"])
    assert second["status"] == "succeeded", second
    alias = wait_for(
        lambda: (a := now.get("/v1/aliases/medqa").json())["targets"][0]["model"] == second["id"] and a,
        15,
        what="the alias to move",
    )
    assert alias["version"] == 2
    # The service principal's secret was exchanged for tokens; only those reached the deployment API.
    deploying = management_calls(azure_sandbox, second["deployment"])
    assert deploying and all(c["issued_token"] for c in deploying)
    before = len(azure_calls(azure_sandbox))
    chat = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    reply = chat.chat.completions.create(model="medqa", messages=QUESTION)
    assert reply.choices[0].message.content
    assert azure_calls(azure_sandbox)[before:][-1]["path"] == (
        f"/openai/deployments/{second['deployment']}/chat/completions"
    )
    # The first tune still serves from the openai account: it cannot be removed under it.
    assert error_code(now.delete("/v1/providers/oai")) == "provider_in_use"


def test_the_canary_key_is_in_no_log_and_no_database_column(stack) -> None:  # type: ignore[no-untyped-def]
    """Runs last in this module: every provider above was created with the canary keys."""
    logs = "\n".join(p.read_text(errors="replace") for p in LOG_DIR.glob("*.log"))
    assert logs, "no process logs found"
    dump = subprocess.run(
        ["pg_dump", "--data-only", TEST_ENV["TUNEFORGE_DATABASE_URL"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "provider_account" in dump and "sk-canary" not in dump
    for canary in (CANARY, MANAGEMENT_CANARY, CANARY[-12:]):
        assert canary not in logs
        assert canary not in dump
