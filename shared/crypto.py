"""Secrets at rest: provider keys and webhook secrets are encrypted with a key derived from
TUNEFORGE_SECRET_KEY; API keys are only ever stored as hashes."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet

from shared.config import get_settings


@lru_cache
def _fernet() -> Fernet:
    secret = get_settings().secret_key.get_secret_value().encode()
    key = base64.urlsafe_b64encode(hashlib.sha256(b"tuneforge-encryption:" + secret).digest())
    return Fernet(key)


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def encrypt_bytes(data: bytes) -> bytes:
    return _fernet().encrypt(data)


def decrypt_bytes(token: bytes) -> bytes:
    return _fernet().decrypt(token)


def hash_api_key(key: str) -> str:
    # API keys carry 192 random bits, so a fast hash is enough (a slow KDF protects low-entropy
    # passwords); it stays valid if the operator rotates TUNEFORGE_SECRET_KEY.
    return hashlib.sha256(key.encode()).hexdigest()
