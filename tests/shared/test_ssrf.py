"""The SSRF guard refuses every spelling of an internal address and pins the checked one."""

from __future__ import annotations

import ipaddress

import pytest

from shared.errors import InvalidInput
from shared.webhooks import ssrf

INTERNAL = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::1",  # local-use NAT64
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not ssrf.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert ssrf.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0x7f.0.0.1/",  # hex
        "http://0177.0.0.1/",  # octal
        "http://017700000001/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
        "http://169.254.169.254/latest/meta-data",
        "https://[::1]/",
        "http://0/",
    ],
)
def test_every_spelling_of_an_internal_host_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        ssrf.resolve(url)
    assert refused.value.code == "webhook_destination_forbidden"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/h", "invalid_webhook_url"),
        ("file:///etc/passwd", "invalid_webhook_url"),
        ("https://user:pw@example.com/h", "invalid_webhook_url"),
        ("https://example.com:22/h", "webhook_port_forbidden"),
        ("https://example.com:notaport/h", "invalid_webhook_url"),
        ("/relative", "invalid_webhook_url"),
    ],
)
def test_malformed_or_odd_urls_are_refused(url: str, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        ssrf.check_url_syntax(url)
    assert refused.value.code == code


def test_the_connection_goes_to_the_checked_address() -> None:
    target = ssrf.resolve("https://8.8.8.8:443/hooks?x=1")
    assert (target.url, target.host, target.sni_hostname) == (
        "https://8.8.8.8:443/hooks?x=1",
        "8.8.8.8:443",
        "8.8.8.8",
    )
    v6 = ssrf.resolve("http://[2606:4700:4700::1111]/h")
    assert v6.url == "http://[2606:4700:4700::1111]/h" and v6.sni_hostname is None


def test_allow_listed_hosts_skip_the_guard() -> None:
    # The test settings allow 127.0.0.1 (the local webhook receivers of the end-to-end tests).
    target = ssrf.resolve("http://127.0.0.1:9999/hooks")
    assert target.url == "http://127.0.0.1:9999/hooks"
    with pytest.raises(InvalidInput):
        ssrf.resolve("http://127.0.0.2:9999/hooks")
