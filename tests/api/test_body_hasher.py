"""The idempotency hash ignores the multipart boundary however the body is chunked."""

from __future__ import annotations

from api.idempotency import BodyHasher


def _multipart(boundary: str, content: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        f"{content}\r\n--{boundary}\r\n"
        f'Content-Disposition: form-data; name="seed"\r\n\r\n4\r\n--{boundary}--\r\n'
    ).encode()


def _digest(body: bytes, boundary: str, chunk: int) -> str:
    hasher = BodyHasher(f"multipart/form-data; boundary={boundary}")
    for start in range(0, len(body), chunk):
        hasher.update(body[start : start + chunk])
    return hasher.hexdigest()


def test_same_form_with_other_boundaries_and_chunkings_hashes_equal() -> None:
    one, two = "a1b2c3d4e5f6", "zz9y8x7w6v5u"
    reference = _digest(_multipart(one, '{"q": 1}'), one, 10_000)
    for chunk in range(1, 40):
        assert _digest(_multipart(two, '{"q": 1}'), two, chunk) == reference


def test_other_content_hashes_differently() -> None:
    boundary = "a1b2c3d4e5f6"
    assert _digest(_multipart(boundary, '{"q": 1}'), boundary, 7) != _digest(
        _multipart(boundary, '{"q": 2}'), boundary, 7
    )


def test_plain_bodies_hash_their_bytes() -> None:
    hasher = BodyHasher("application/json")
    hasher.update(b'{"a":')
    hasher.update(b"1}")
    other = BodyHasher("application/json")
    other.update(b'{"a":1}')
    assert hasher.hexdigest() == other.hexdigest()
