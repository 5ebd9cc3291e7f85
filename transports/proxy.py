"""HTTP CONNECT proxies: which one to use for a relay address, and the CONNECT exchange.

The choice follows the conventions of curl and requests: ``HTTPS_PROXY`` for secure relay
addresses, ``HTTP_PROXY`` for plain ones (lower-case names too), unless ``NO_PROXY`` lists the
host (exact name, a domain suffix such as ``.example.com`` or ``example.com``, an IP address, or
``*`` for everything). Shared by every transport; the CONNECT bytes are built and parsed here, the
transport only moves them.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from hyco_core import HycoError

__all__ = ["Proxy", "ProxyError", "connect_request", "parse_connect_response", "proxy_for"]

MAX_RESPONSE_HEAD = 16 * 1024


class ProxyError(HycoError):
    """The proxy refused or broke the tunnel to the relay."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Proxy({self.host}:{self.port})"


def proxy_for(host: str, *, secure: bool, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy to reach ``host`` through, from the environment, or ``None`` for direct."""
    env = os.environ if environ is None else environ
    names = ("HTTPS_PROXY", "https_proxy") if secure else ("HTTP_PROXY", "http_proxy")
    url = next((env[name] for name in names if env.get(name)), None)
    if url is None or _bypassed(host, env.get("NO_PROXY") or env.get("no_proxy") or ""):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "") or not parts.hostname:
        raise ProxyError(f"only http:// CONNECT proxies are supported, not {parts.scheme}://")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, authorization)


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":")[0] if entry.count(":") == 1 else entry.strip("[]")
        if _is_ip(host) and _is_ip(entry.split("/")[0]):
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
            continue
        suffix = entry.lstrip(".")
        if host == suffix or host.endswith("." + suffix):
            return True
    return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    """The CONNECT request that asks ``proxy`` for a tunnel to ``host:port``."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_connect_response(head: bytes) -> int | None:
    """``None`` until the proxy's answer head is complete; then its length, if the tunnel is up.

    A refusal raises :class:`ProxyError` with the proxy's status line.
    """
    end = head.find(b"\r\n\r\n")
    if end < 0:
        if len(head) > MAX_RESPONSE_HEAD:
            raise ProxyError("the proxy's answer to CONNECT is too long")
        return None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyError(f"the proxy answered CONNECT with {status_line[:80]!r}")
    if not parts[1].startswith("2"):
        raise ProxyError(f"the proxy refused the tunnel: {status_line[:120]}")
    return end + 4
