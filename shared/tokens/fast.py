"""The optional exact fast tokenizer (quicktok-v1, `pip install 'tuneforge[fast]'`)."""

from __future__ import annotations

import logging
from typing import Any

from shared.tokens.backends import _Backend, _tiktoken_backend
from shared.tokens.probes import _PROBE_COUNTS, _PROBES

log = logging.getLogger(__name__)

# What quicktok may raise for a string it cannot take (a lone surrogate: TypeError).
_REFUSED = (TypeError, ValueError, UnicodeError)


def fast_backend(encoding_name: str, tokenizer: Any = None) -> _Backend | None:
    """quicktok's tokenizer for the encoding (or `tokenizer`, an object with quicktok's `count`
    and `encode_batch`) when it is available and both its single and batch calls give tiktoken's
    counts on every probe; None otherwise. Strings it refuses (lone surrogates) are counted by
    tiktoken, loaded then."""
    try:
        if tokenizer is None:
            import quicktok  # type: ignore[import-not-found,unused-ignore]

            tokenizer = quicktok.get_encoding(encoding_name)
        count, encode_batch = tokenizer.count, tokenizer.encode_batch
        probes = list(_PROBES)
        known = _PROBE_COUNTS.get(encoding_name)
        expected = list(known) if known is not None else _tiktoken_backend(encoding_name).count_all(probes)
        offsets = encode_batch(probes, 1, False)[1].tolist()
        batch = [end - start for start, end in zip(offsets, offsets[1:], strict=False)]
        if [count(text) for text in probes] != expected or batch != expected:
            log.warning("quicktok disagrees with tiktoken on %s; counting with tiktoken", encoding_name)
            return None
    except Exception as exc:  # noqa: BLE001 - not installed, no such encoding, a broken build
        if not isinstance(exc, ImportError):
            log.warning("quicktok is unusable for %s (%s); counting with tiktoken", encoding_name, exc)
        return None

    def count_one(text: str) -> int:
        try:
            return count(text)  # type: ignore[no-any-return]
        except _REFUSED:
            return _tiktoken_backend(encoding_name).count_all([text])[0]

    def count_all(texts: list[str]) -> list[int]:
        try:
            return [count(text) for text in texts]
        except _REFUSED:
            return [count_one(text) for text in texts]

    def count_detached(texts: list[str], threads: int) -> list[int]:
        try:
            offsets = encode_batch(texts, threads, False)[1]
        except _REFUSED:
            return [count_one(text) for text in texts]
        return (offsets[1:] - offsets[:-1]).tolist()  # type: ignore[no-any-return]

    return _Backend("quicktok", count_all, count_detached=count_detached, native_threads=True)
