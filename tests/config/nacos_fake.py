"""A fake Nacos server: the part of the HTTP open API that orderwatch uses, over real HTTP.

It speaks what a Nacos 1.x/2.x server answers on:

* ``POST /nacos/v1/auth/login`` (form ``username``, ``password``) → ``{"accessToken", "tokenTtl"}``;
  403 for wrong credentials. With ``users`` set, every other call needs ``accessToken``
  (403 without it, or with an expired one).
* ``GET /nacos/v1/cs/configs?dataId=&group=&tenant=`` → the content (``text/plain``), 404
  ``config data not exist``.
* ``GET /nacos/v2/cs/config?dataId=&group=&namespaceId=`` → ``{"code": 0, "data": ...}``.
* ``POST /nacos/v1/cs/configs/listener`` with the form field ``Listening-Configs``
  (``dataId^2group^2md5[^2tenant]^1``, several in a row) and ``Long-Pulling-Timeout``: the
  MD5 handshake. Keys whose MD5 differs from the server's are answered at once, URL-encoded
  ``dataId^2group[^2tenant]^1``; otherwise the request is held until one of them is
  published or the timeout passes (empty 200).

The test controls it in-process: :meth:`publish`, :meth:`delete`, :meth:`stop` and
:meth:`start` again on the same port (an outage and the recovery), :meth:`fail_with` (5xx),
:meth:`expire_tokens`. Counters say what the client did.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import Counter
from urllib.parse import quote, unquote_plus

from aiohttp import web

Key = tuple[str, str, str]  # data id, group, tenant


def md5(content: str) -> str:
    return hashlib.md5(content.encode("utf-8")).hexdigest()


class FakeNacos:
    def __init__(self, *, users: dict[str, str] | None = None, token_ttl: int = 18000) -> None:
        self.users = users
        self.token_ttl = token_ttl
        self.configs: dict[Key, str] = {}
        self.tokens: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.listen_bodies: list[str] = []
        self.listen_timeouts: list[str] = []
        self.failing: int | None = None  # answer every call with this HTTP status
        self.port = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_post("/nacos/v1/auth/login", self._login)
        self.app.router.add_get("/nacos/v1/cs/configs", self._get)
        self.app.router.add_get("/nacos/v2/cs/config", self._get_v2)
        self.app.router.add_post("/nacos/v1/cs/configs/listener", self._listen)

    # -- control ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> str:
        """Listen (on the same port as before, after a stop); return ``host:port``."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.address

    async def stop(self) -> None:
        """Go away: held listeners are dropped, new connections refused."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def publish(
        self,
        content: str,
        data_id: str = "orderwatch.toml",
        group: str = "DEFAULT_GROUP",
        tenant: str = "",
    ) -> None:
        self.configs[(data_id, group, tenant)] = content
        async with self._changed:
            self._changed.notify_all()

    async def delete(
        self, data_id: str = "orderwatch.toml", group: str = "DEFAULT_GROUP", tenant: str = ""
    ) -> None:
        self.configs.pop((data_id, group, tenant), None)
        async with self._changed:
            self._changed.notify_all()

    def fail_with(self, status: int | None) -> None:
        self.failing = status

    def expire_tokens(self) -> None:
        self.tokens.clear()

    # -- handlers --------------------------------------------------------------------------

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.failing is not None:
            return web.Response(status=self.failing, text="server error (fake)")
        if self.users is None:
            return None
        if request.query.get("accessToken") not in self.tokens:
            return web.Response(status=403, text="token invalid!")
        return None

    async def _login(self, request: web.Request) -> web.Response:
        self.calls["login"] += 1
        if self.failing is not None:
            return web.Response(status=self.failing, text="server error (fake)")
        form = await request.post()
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        if self.users is None or self.users.get(user) != password:
            return web.Response(status=403, text="unknown user!")
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return web.json_response(
            {"accessToken": token, "tokenTtl": self.token_ttl, "globalAdmin": False}
        )

    async def _get(self, request: web.Request) -> web.Response:
        self.calls["get"] += 1
        denied = self._denied(request)
        if denied is not None:
            return denied
        q = request.query
        if "dataId" not in q or "group" not in q:
            return web.Response(status=400, text="caused: Required parameter missing")
        content = self.configs.get((q["dataId"], q["group"], q.get("tenant", "")))
        if content is None:
            return web.Response(status=404, text="config data not exist")
        return web.Response(text=content, content_type="text/plain", charset="utf-8")

    async def _get_v2(self, request: web.Request) -> web.Response:
        self.calls["get_v2"] += 1
        denied = self._denied(request)
        if denied is not None:
            return denied
        q = request.query
        content = self.configs.get((q["dataId"], q["group"], q.get("namespaceId", "")))
        if content is None:
            return web.json_response(
                {"code": 20004, "message": "resource not found", "data": "config data not exist"},
                status=404,
            )
        return web.json_response({"code": 0, "message": "success", "data": content})

    def _stale(self, wanted: list[tuple[Key, str]]) -> list[Key]:
        stale = []
        for key, client_md5 in wanted:
            content = self.configs.get(key)
            if (md5(content) if content is not None else "") != client_md5:
                stale.append(key)
        return stale

    async def _listen(self, request: web.Request) -> web.Response:
        self.calls["listen"] += 1
        denied = self._denied(request)
        if denied is not None:
            return denied
        form = await request.post()
        probe = form.get("Listening-Configs")
        if not isinstance(probe, str) or not probe:
            return web.Response(status=400, text="invalid probeModify")
        self.listen_bodies.append(probe)
        timeout_header = request.headers.get("Long-Pulling-Timeout", "")
        self.listen_timeouts.append(timeout_header)
        wanted: list[tuple[Key, str]] = []
        for entry in unquote_plus(probe).split("\x01"):
            if not entry:
                continue
            parts = entry.split("\x02")
            if len(parts) not in (3, 4):
                return web.Response(status=400, text="invalid probeModify")
            tenant = parts[3] if len(parts) == 4 else ""
            wanted.append(((parts[0], parts[1], tenant), parts[2]))
        hold = int(timeout_header) / 1000 if timeout_header.isdigit() else 0.0
        stale = self._stale(wanted)
        if not stale and hold > 0:
            async with self._changed:
                try:
                    async with asyncio.timeout(hold):
                        await self._changed.wait_for(lambda: bool(self._stale(wanted)))
                except TimeoutError:
                    pass
            stale = self._stale(wanted)
        self.calls["listen_changed" if stale else "listen_unchanged"] += 1
        body = "".join("\x02".join([d, g, *([t] if t else [])]) + "\x01" for d, g, t in stale)
        return web.Response(text=quote(body), content_type="text/plain")
