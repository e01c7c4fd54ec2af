"""A local webhook receiver: records every request it gets, and checks each one's signature with
two independent verifiers (the `standardwebhooks` reference library and the `openai` SDK's
`webhooks.verify_signature`) against the secrets its test registered (`expect_secrets`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    status_code: int = 200
    # Answers for the next requests, in order; `status_code` once they run out.
    script: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    # Seconds to wait before answering each request (a slow receiver), and the most requests it
    # was ever answering at once.
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect_secrets(self, *secrets: str) -> None:
        """Every request this receiver gets must verify under one of these (the endpoint's secret,
        the project's default callback secret, a rotated one…)."""
        self.secrets.extend(secrets)

    def verification_failures(self) -> list[str]:
        """Why each request that does not verify with both libraries under a registered secret fails."""
        failures = []
        for number, request in enumerate(list(self.requests)):
            if not self.secrets:
                failures.append(f"request {number}: no secret registered (call receiver.expect_secrets)")
                continue
            errors = [error for secret in self.secrets if (error := _verify(request, secret)) is not None]
            if len(errors) == len(self.secrets):
                failures.append(f"request {number} ({request.headers.get('webhook-id')}): {errors}")
        return failures


def _verify(request: Received, secret: str) -> str | None:
    from openai import OpenAI
    from standardwebhooks import Webhook

    try:
        Webhook(secret).verify(request.body, request.headers)
    except Exception as exc:  # noqa: BLE001 - reported with the request
        return f"standardwebhooks: {exc!r}"
    try:
        OpenAI(api_key="unused").webhooks.verify_signature(request.body, request.headers, secret=secret)
    except Exception as exc:  # noqa: BLE001
        return f"openai: {exc!r}"
    return None


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if receiver.delay:
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.in_flight -= 1
            receiver.requests.append(received)
            self.send_response(receiver.script.pop(0) if receiver.script else receiver.status_code)
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


class Canary:
    """A TCP listener on every local address of a port that counts the connections it accepts."""

    def __init__(self, port: int) -> None:
        import socket

        self.connections = 0
        self._sockets = []
        for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::1")):
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(16)
            except OSError:
                continue
            self._sockets.append(sock)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
