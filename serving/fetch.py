"""Fetching image URLs, for the allow-listed prefixes only.

By default the endpoint fetches nothing: an `image_url` that is not a `data:` URL is the item error
`image_url_refused`. With `image_url_allowlist` (builder argument) set to URL prefixes such as
`https://cdn.example.com/media/`, an http(s) URL that lies under one of them is fetched by the ingress:

* matched on parsed parts, never on raw text: same scheme, same host (case-insensitive), same port (the
  scheme's default when absent), and a path under the prefix's path; URLs with a user:password part are
  refused (`https://cdn.example.com@evil.test/` cannot pass as the CDN);
* redirects are not followed (a redirect could leave the allow-list), a non-200 status, a timeout
  (`image_fetch_timeout_s`, whole transfer) or a transport error is the item error `image_fetch_failed`;
* the body is read as a stream and abandoned past `max_image_bytes` (`image_too_large`), so a huge or
  endless response costs at most that much memory;
* what comes back is then checked like any inline image (format, pixels, corruption) by the model side.

No Ray and no FastAPI here: unit-tested against a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Iterable, Optional
from urllib.parse import unquote, urlsplit

from moderation.schema import ErrorCode, InputError

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Prefix:
    scheme: str
    host: str
    port: int
    path: str


def _parts(url: str) -> Optional[_Prefix]:
    """Scheme, host, port and path of an http(s) URL without userinfo; None when it is anything else."""
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return None
    scheme = split.scheme.lower()
    if scheme not in DEFAULT_PORTS or not split.hostname or "@" in split.netloc:
        return None
    return _Prefix(scheme, split.hostname.lower(), port or DEFAULT_PORTS[scheme], split.path or "/")


class UrlAllowList:
    """URL prefixes whose images may be fetched. Empty: nothing is fetched."""

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        self.prefixes: list[_Prefix] = []
        for prefix in prefixes:
            parts = _parts(prefix)
            if parts is None or not parts.path.endswith("/"):
                raise ValueError(f"image_url_allowlist entry {prefix!r} must be an http(s) URL prefix without user "
                                 "info whose path ends with '/' (or is empty: the whole host), "
                                 "e.g. https://cdn.example.com/media/")
            self.prefixes.append(parts)

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def allows(self, url: str) -> bool:
        parts = _parts(url)
        if parts is None:
            return False
        # No dot segments or backslashes, even percent-encoded: a server may resolve them out of the prefix.
        path = unquote(parts.path)
        if "\\" in path or any(segment in (".", "..") for segment in path.split("/")):
            return False
        return any(parts.scheme == p.scheme and parts.host == p.host and parts.port == p.port
                   and parts.path.startswith(p.path) for p in self.prefixes)


async def fetch_image(client: Any, url: str, max_bytes: int, timeout_s: float) -> bytes:
    """GET one allow-listed image URL with an httpx.AsyncClient. Raises InputError with the item's error code."""
    import httpx

    async def get() -> bytes:
        async with client.stream("GET", url, follow_redirects=False) as response:
            if response.status_code != 200:
                where = f" to {response.headers.get('location')!r}" if response.is_redirect else ""
                raise InputError(ErrorCode.IMAGE_FETCH_FAILED,
                                 f"fetching the image URL answered HTTP {response.status_code}{where} "
                                 "(redirects are not followed)")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InputError(ErrorCode.IMAGE_TOO_LARGE,
                                 f"the image URL serves {declared} bytes, over the limit of {max_bytes}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise InputError(ErrorCode.IMAGE_TOO_LARGE,
                                     f"the image URL serves more than the limit of {max_bytes} bytes")
            if not data:
                raise InputError(ErrorCode.IMAGE_CORRUPT, "the image URL served 0 bytes")
            return bytes(data)

    try:
        return await asyncio.wait_for(get(), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise InputError(ErrorCode.IMAGE_FETCH_FAILED, f"fetching the image URL took longer than {timeout_s} s") from None
    except httpx.HTTPError as exc:
        raise InputError(ErrorCode.IMAGE_FETCH_FAILED,
                         f"fetching the image URL failed ({type(exc).__name__}: {str(exc)[:200]})") from None
