"""What the HTTP vendor adapters share: one aiohttp session per vendor.

The session is made on first use, inside the running event loop, with a connection pool as
large as the vendor's ``concurrency``, and closed with the adapter (unless it was handed in,
as tests and the benchmark do).
"""

from __future__ import annotations

import aiohttp

from ..settings import VendorSettings


class HttpSession:
    """Mixed into an adapter: ``_get_session()`` and ``close()``."""

    settings: VendorSettings

    def _init_http(self, settings: VendorSettings, session: aiohttp.ClientSession | None) -> None:
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout.total_seconds())

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.concurrency, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=True
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None


__all__ = ["HttpSession"]
