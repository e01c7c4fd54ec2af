"""Prefixed, time-ordered ids (`ds_…`, `tune_…`): sortable, so cursors can use them directly."""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = str.maketrans("", "", "=")


def new_id(prefix: str) -> str:
    # 48 bits of milliseconds then 80 random bits: lexical order is creation order.
    raw = int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10)
    body = base64.b32hexencode(raw).decode().translate(_ALPHABET).lower()
    return f"{prefix}_{body}"
