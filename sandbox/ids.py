"""Ids with OpenAI's prefixes (`file-…`, `ftjob-…`, `ftevent-…`, `ftckpt_…`, `chatcmpl-…`, `req_…`)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}{random_token(length)}"


def file_id() -> str:
    return new_id("file-")


def job_id() -> str:
    return new_id("ftjob-")


def event_id() -> str:
    return new_id("ftevent-")


def checkpoint_id() -> str:
    return new_id("ftckpt_")


def completion_id() -> str:
    return new_id("chatcmpl-", 29)


def request_id() -> str:
    return f"req_{secrets.token_hex(16)}"
