"""The API's access log (api/access_log.py): every management request is written with its method,
path and status; chat requests only with TUNEFORGE_CHAT_ACCESS_LOG; no query string or key."""

from __future__ import annotations

import re
import uuid

import openai

from tests.conftest import TEST_ENV
from tests.e2e.story import client
from tests.support.procs import Proc, free_port, wait_for, wait_http

QUESTION = [{"role": "user", "content": "头痛怎么办？"}]


def test_management_requests_are_logged_and_chat_only_when_asked(stack, make_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    api = Proc(
        "api-chat-log", ["api", "--port", str(port)], {**TEST_ENV, "TUNEFORGE_CHAT_ACCESS_LOG": "1"}, tmp_path
    )
    quiet_port = free_port()
    quiet = Proc("api-quiet", ["api", "--port", str(quiet_port)], TEST_ENV, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", api)
        wait_http(f"http://127.0.0.1:{quiet_port}/healthz", quiet)
        key = make_key()
        missing = f"/v1/tunes/tune_{uuid.uuid4().hex}"
        for url, proc in ((f"http://127.0.0.1:{port}", api), (f"http://127.0.0.1:{quiet_port}", quiet)):
            assert client(url, key).get(missing, params={"secret": "in-the-query"}).status_code == 404
            chat = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
            chat.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
            wait_for(
                lambda proc=proc: f"GET {missing}" in proc.log_path.read_text(), 10, what="the access line"
            )

        pattern = re.compile(r'"(GET|POST) (\S+)" (\d{3}) [\d.]+ ms')
        logged = {
            name: [m.groups() for m in pattern.finditer(proc.log_path.read_text())]
            for name, proc in (("chat-log", api), ("quiet", quiet))
        }
        for name in logged:
            assert ("GET", missing, "404") in logged[name], logged[name]
        wait_for(
            lambda: ("POST", "/v1/chat/completions", "200")
            in [m.groups() for m in pattern.finditer(api.log_path.read_text())],
            10,
            what="the chat access line",
        )
        assert not [entry for entry in logged["quiet"] if entry[1] == "/v1/chat/completions"]
        for proc in (api, quiet):
            text = proc.log_path.read_text()
            assert "in-the-query" not in text and key not in text
    finally:
        api.stop()
        quiet.stop()
