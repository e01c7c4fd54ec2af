"""kombu's Redis transport with one fix: a worker whose broker connection drops while it runs a
task reconnects instead of exiting.

After a connection loss, Celery's consumer closes the broken connection twice (`collect()`, then
`close()`). The first close detaches the transport (`transport.client = None`); the second closes
the channel again, and the channel, which puts the consumer's unacknowledged messages back on the
queue when it closes, looks up the Redis address through that detached transport and raises
AttributeError. Celery treats that as an unrecoverable error and the worker process exits (with
status 0, so a supervisor restarting only on failure leaves it down). Any Redis restart or
failover with a task in flight did it.

Keeping the address on the transport lets that late close (and a late ack) reach Redis again, or
fail with an ordinary connection error that kombu and Celery already handle. Nothing else
changes: every message is still acknowledged late, and work whose message is lost anyway is
re-driven by the scheduler's sweep from Postgres."""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


class Transport(redis.Transport):
    @property
    def client(self) -> Any:
        return self._tuneforge_client

    @client.setter
    def client(self, value: Any) -> None:
        # kombu sets None to detach a closed connection; channels still closing need the address.
        if value is not None or not hasattr(self, "_tuneforge_client"):
            self._tuneforge_client = value
