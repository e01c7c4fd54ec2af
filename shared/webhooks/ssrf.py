"""Refuse callback URLs that would make Tuneforge call into its own network.

The host is resolved when the webhook is sent (not only when it is registered), and every
address it resolves to must be public, unless the operator allow-lists the host."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from shared.config import get_settings
from shared.errors import InvalidInput


def check_url_syntax(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            "Webhook URLs must be absolute http(s) URLs, e.g. https://example.com/hooks.",
            code="invalid_webhook_url",
            param="url",
        )
    if parts.username or parts.password:
        raise InvalidInput(
            "Webhook URLs must not carry credentials; authenticate the request with its signature.",
            code="invalid_webhook_url",
            param="url",
        )


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_destination(url: str) -> None:
    """Raise InvalidInput when `url` points at a non-public address and is not allow-listed."""
    check_url_syntax(url)
    host = urlsplit(url).hostname or ""
    if host in get_settings().webhook_allowed_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise InvalidInput(
            f"Cannot resolve webhook host {host!r}.", code="webhook_host_unresolvable"
        ) from exc
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            raise InvalidInput(
                f"Webhook host {host!r} resolves to the non-public address {address}; callbacks may "
                "only go to public addresses (operators can allow a host with "
                "TUNEFORGE_WEBHOOK_ALLOWED_HOSTS).",
                code="webhook_destination_forbidden",
                param="url",
            )
