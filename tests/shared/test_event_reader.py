"""The gateway's SSE reader (shared/chat/upstream.EventReader): usage is found and the usage-only
event dropped or kept however the upstream's bytes are cut into reads."""

from __future__ import annotations

import orjson
import pytest

from shared.chat.upstream import EventReader

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def event(payload: object, newline: bytes = b"\n") -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"data: " + data + newline + newline


def stream(newline: bytes = b"\n") -> tuple[list[bytes], bytes]:
    """The events of a stream with include_usage, and the usage-only one."""
    chunk = {"id": "c1", "object": "chat.completion.chunk", "usage": None}
    contents = ["你好", ' say "usage": {', "!"]  # JSON-escaped quotes must not look like usage
    events = [event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}, newline)]
    events += [
        event({**chunk, "choices": [{"index": 0, "delta": {"content": c}}]}, newline) for c in contents
    ]
    events.append(event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, newline))
    usage_only = event({**chunk, "choices": [], "usage": USAGE}, newline)
    return [*events, usage_only, event(b"[DONE]", newline)], usage_only


def read(reader: EventReader, raw: bytes, cuts: list[int]) -> bytes:
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return b"".join(reader.feed(piece) for piece in pieces) + reader.flush()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("keep_usage", [True, False])
def test_every_cut_finds_usage_and_forwards_the_right_bytes(newline: bytes, keep_usage: bool) -> None:
    events, usage_only = stream(newline)
    raw = b"".join(events)
    expected = raw if keep_usage else raw.replace(usage_only, b"")
    for cut in range(1, len(raw)):
        for cuts in ([cut], [cut, min(len(raw), cut + 7)] if cut + 7 < len(raw) else [cut]):
            reader = EventReader(keep_usage=keep_usage, collect_text=False)
            assert read(reader, raw, cuts) == expected, cuts
            assert reader.usage == USAGE, cuts


def test_one_byte_at_a_time_with_text_collected() -> None:
    events, usage_only = stream()
    raw = b"".join(events)
    reader = EventReader(keep_usage=False, collect_text=True)
    assert read(reader, raw, list(range(1, len(raw)))) == raw.replace(usage_only, b"")
    assert reader.usage == USAGE
    assert reader.text == '你好 say "usage": {!'


def test_a_stream_without_usage_passes_untouched() -> None:
    events, usage_only = stream()
    raw = b"".join(e for e in events if e != usage_only)
    for keep_usage in (True, False):
        reader = EventReader(keep_usage=keep_usage, collect_text=False)
        assert read(reader, raw, [5, 40, 41]) == raw
        assert reader.usage is None


def test_an_unterminated_last_event_is_still_read() -> None:
    events, usage_only = stream()
    raw = b"".join(events[:-2]) + usage_only.rstrip(b"\n")
    reader = EventReader(keep_usage=True, collect_text=False)
    assert read(reader, raw, [len(raw) // 2]) == raw
    assert reader.usage == USAGE
