"""Refuse callback URLs that would make Tuneforge call into its own network (OWASP SSRF).

The host is resolved when the webhook is sent, every address it resolves to must be public,
and the request then goes to the address that was checked (the URL keeps its host for the
`Host` header and TLS), so a DNS answer that changes between check and connect (rebinding)
cannot redirect it. `TUNEFORGE_WEBHOOK_ALLOWED_HOSTS` is the operator's explicit escape."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from shared.config import get_settings
from shared.errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
CGNAT = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True)
class Target:
    """Where to connect (`url`, with the checked address) and what to tell the server."""

    url: str
    host: str
    sni_hostname: str | None


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
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(
            "The webhook URL's port is not a number.", code="invalid_webhook_url", param="url"
        ) from None
    allowed_ports = get_settings().webhook_allowed_ports
    if port is not None and port not in allowed_ports and not _allowed(parts.hostname):
        raise InvalidInput(
            f"Webhook URLs may use the ports {allowed_ports}, not {port} (operators can allow more "
            "with TUNEFORGE_WEBHOOK_ALLOWED_PORTS, or a host with TUNEFORGE_WEBHOOK_ALLOWED_HOSTS).",
            code="webhook_port_forbidden",
            param="url",
        )


def check_registration(url: str) -> None:
    """At registration: refuse what is already known to be internal. A name that does not
    resolve yet is accepted; `resolve` checks again at every send."""
    try:
        resolve(url)
    except InvalidInput as exc:
        if exc.code != "webhook_host_unresolvable":
            raise


def is_public(address: Address) -> bool:
    """True only for globally routable unicast addresses, looking inside IPv6 forms that carry an
    IPv4 address (mapped, NAT64, 6to4), which are what reach an internal IPv4 host."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return False
    return address.is_global and not address.is_multicast


def resolve(url: str) -> Target:
    """Check `url` and pin it to a public address; raises InvalidInput when it may not be called."""
    check_url_syntax(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _allowed(host):
        return Target(url=url, host=parts.netloc, sni_hostname=None)
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(
            f"Cannot resolve webhook host {host!r}.", code="webhook_host_unresolvable"
        ) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        if not is_public(address):
            raise InvalidInput(
                f"Webhook host {host!r} resolves to the non-public address {address}; callbacks may "
                "only go to public addresses (operators can allow a host with "
                "TUNEFORGE_WEBHOOK_ALLOWED_HOSTS).",
                code="webhook_destination_forbidden",
                param="url",
            )
    pinned = addresses[0]
    literal = f"[{pinned}]" if pinned.version == 6 else str(pinned)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return Target(
        url=urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host=parts.netloc,
        sni_hostname=host if parts.scheme == "https" else None,
    )


def _allowed(host: str | None) -> bool:
    return bool(host) and host in get_settings().webhook_allowed_hosts


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None
