"""The blob store: raw uploads and prepared files. A local folder by default; keys are relative
paths so the same rows work when the folder is a shared mount."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from shared.config import get_settings

CHUNK = 1024 * 1024


def path_for(key: str) -> Path:
    root = get_settings().blob_root.resolve()
    path = (root / key).resolve()
    if root not in path.parents:
        raise ValueError(f"blob key escapes the store: {key!r}")
    return path


def write_stream(key: str, source: BinaryIO, *, max_bytes: int | None = None) -> int:
    """Copy `source` into the store chunk by chunk; returns the size, or raises OverflowError
    (and leaves nothing behind) past `max_bytes`."""
    path = path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    written = 0
    try:
        with tmp.open("wb") as out:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise OverflowError(written)
                out.write(chunk)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def open_read(key: str) -> BinaryIO:
    return path_for(key).open("rb")


def open_write(key: str) -> BinaryIO:
    path = path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")


def iter_chunks(key: str) -> Iterator[bytes]:
    with open_read(key) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def delete_prefix(prefix: str) -> None:
    shutil.rmtree(path_for(prefix), ignore_errors=True)


def delete(key: str) -> None:
    path_for(key).unlink(missing_ok=True)
