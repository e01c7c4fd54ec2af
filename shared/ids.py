"""Prefixed, time-ordered ids (`ds_…`, `tune_…`): sortable, so cursors and event order can use
them directly."""

from __future__ import annotations

import base64
import os
import threading
import time

_STRIP_PADDING = str.maketrans("", "", "=")
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)


def new_id(prefix: str) -> str:
    """48 bits of milliseconds then 80 random bits, in base32hex so lexical order is creation
    order. Within one millisecond the random part counts up (as monotonic ULIDs do), so ids made
    by one process in a burst still sort in the order they were made."""
    global _last
    with _lock:
        millis = int(time.time() * 1000)
        last_millis, last_random = _last
        if millis <= last_millis:
            millis, rand = last_millis, (last_random + 1) % (1 << _RANDOM_BITS)
        else:
            rand = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
        _last = (millis, rand)
    raw = millis.to_bytes(6, "big") + rand.to_bytes(_RANDOM_BITS // 8, "big")
    return f"{prefix}_{base64.b32hexencode(raw).decode().translate(_STRIP_PADDING).lower()}"
