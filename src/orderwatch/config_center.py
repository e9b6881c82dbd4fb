"""Nacos as the config center: read one data id, cache it on disk, listen, reload.

The data id holds a layer of orderwatch's own keys (TOML, or ``.properties`` / ``.yaml``
by its extension) that goes on top of defaults < ``orderwatch.toml`` < ``ORDERWATCH_*``.
Only Nacos's HTTP open API is used, through aiohttp:

* ``GET  {server}/nacos/v1/cs/configs?dataId=&group=&tenant=`` reads the content
  (``/nacos/v2/cs/config`` with ``api = "v2"``);
* ``POST {server}/nacos/v1/cs/configs/listener`` with the form field
  ``Listening-Configs = dataId^2group^2md5^2tenant^1`` and ``Long-Pulling-Timeout`` is the
  long poll: the server answers at once when its MD5 differs from ours, else holds the
  request until the content changes or the pull timeout ends;
* ``POST {server}/nacos/v1/auth/login`` trades ``username``/``password`` for the
  ``accessToken`` sent with every call (an access key signs calls instead).

At start (:func:`load_initial`) the content is read once, validated with the rest of the
config, and cached beside the database; when Nacos cannot be reached, or what it holds is
invalid, the cached copy is used and a warning says so. While running,
:class:`ConfigWatcher` long-polls; on a change it validates the whole merged config and
swaps it into the :class:`~orderwatch.settings.SettingsHolder` the engine reads, so
polling and vendor settings apply to the next schedule computed and the next vendor call.
An invalid update is logged and counted (``rejected_updates``) and the last good config
stays in force; keys that need a restart (``settings.RESTART_ONLY``) keep their running
value. An outage is retried with backoff, and the config in force stays meanwhile.

Errors::

    NacosUnavailable     no usable answer: network, timeout, HTTP 5xx, unexpected status
    └── NacosDenied      HTTP 401/403: wrong username/password, access key or rights
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib
import json
import os
import random
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import aiohttp
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .log import get_logger
from .settings import (
    ConfigCenterSettings,
    Loaded,
    RemoteState,
    SettingsHolder,
    changed_keys,
    keep_restart_only,
    with_layer,
)

log = get_logger("orderwatch.config")

T = TypeVar("T")

DEFAULT_PORT = 8848


class NacosUnavailable(Exception):
    """Nacos gave no usable answer; the config in force stays and the call is retried."""


class NacosDenied(NacosUnavailable):
    """Nacos refused the credentials or the rights (HTTP 401/403)."""


def content_md5(content: str) -> str:
    """The MD5 Nacos compares in the listener: lowercase hex over the UTF-8 content."""
    return hashlib.md5(content.encode("utf-8"), usedforsecurity=False).hexdigest()


def describe(cc: ConfigCenterSettings) -> str:
    """How errors and logs name the source: ``nacos data id X (group G, namespace N)``."""
    ns = cc.namespace or "public"
    return f"nacos data id {cc.data_id} (group {cc.group}, namespace {ns})"


# ---------------------------------------------------------------------------- content


def content_format(cc: ConfigCenterSettings) -> str:
    """``toml``, ``properties`` or ``yaml``: ``format``, or the data id's extension."""
    if cc.format != "auto":
        return cc.format
    suffix = cc.data_id.rpartition(".")[2].lower() if "." in cc.data_id else ""
    if suffix == "properties":
        return "properties"
    if suffix in ("yaml", "yml"):
        return "yaml"
    return "toml"


def parse_content(content: str, *, fmt: str, label: str) -> dict[str, Any]:
    """The layer a data id's content gives, as nested tables; ConfigError names the line."""
    text = content.removeprefix("\ufeff")
    if fmt == "properties":
        return parse_properties(text, label=label)
    if fmt == "yaml":
        try:
            yaml = importlib.import_module("yaml")
        except ImportError:
            raise ConfigError(
                [f"{label}: is YAML, but PyYAML is not installed (pip install pyyaml)"]
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{label}: not valid YAML: {exc}"]) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(
                [f"{label}: must be a mapping of sections, got {type(data).__name__}"]
            )
        return {str(k): v for k, v in data.items()}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: not valid TOML: {exc}"]) from None


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def parse_properties(text: str, *, label: str = "properties") -> dict[str, Any]:
    """Java ``.properties``: ``polling.initial_delay = 5m`` → ``{"polling": {...}}``.

    Comments (``#``, ``!``), ``=``/``:``/blank separators, trailing-backslash continuation
    and ``\\t \\n \\uXXXX`` escapes. Values stay strings; the settings model converts them.
    """
    layer: dict[str, Any] = {}
    seen: dict[str, int] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i].lstrip()
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and i < len(lines):
            line = line[:-1] + lines[i].lstrip()
            i += 1
        if _continues(line):
            line = line[:-1]
        key, value = _split_property(line)
        try:
            key, value = _unescape(key), _unescape(value)
        except ValueError as exc:
            raise ConfigError([f"{label}, line {start}: {exc}"]) from None
        if not key or any(not part for part in key.split(".")):
            raise ConfigError([f"{label}, line {start}: {key!r} is not a dotted key"])
        if key in seen:
            raise ConfigError(
                [f"{label}, line {start}: {key} is set twice (first on line {seen[key]})"]
            )
        seen[key] = start
        node = layer
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(
                    [f"{label}, line {start}: {key} is under {prefix}, which holds a value"]
                )
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError([f"{label}, line {start}: {key} is a table, not a value"])
        node[parts[-1]] = value
    return layer


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _split_property(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=:" or ch.isspace():
            key, rest = line[:i], line[i:].lstrip()
            if ch.isspace() and rest[:1] in ("=", ":"):
                rest = rest[1:].lstrip()
            elif not ch.isspace():
                rest = line[i + 1 :].lstrip()
            return key, rest.rstrip()
        i += 1
    return line, ""


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad unicode escape \\u{digits}")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def layered(
    loaded: Loaded, cc: ConfigCenterSettings, content: str | None, *, remote: RemoteState
) -> Loaded:
    """``loaded`` (file + env) with the data id's content on top, validated whole.

    ``None`` content (the data id does not exist) is an empty layer. Adapters named by
    the vendors are looked up by the validation, so a typo is rejected here and not at
    the first call.
    """
    label = describe(cc)
    layer = {} if content is None else parse_content(content, fmt=content_format(cc), label=label)
    return with_layer(loaded, layer, source="nacos", label=label, remote=remote)


# ---------------------------------------------------------------------------- disk cache


def default_cache_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "orderwatch"


def _sqlite_file(database_url: str) -> Path | None:
    try:
        url = make_url(database_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def cache_path(
    cc: ConfigCenterSettings, database_url: str, *, env: Mapping[str, str] | None = None
) -> Path:
    """Where the last good copy of the data id lives.

    ``cache_dir`` when set; else ``.orderwatch-nacos-cache`` beside the SQLite file; else
    ``$XDG_CACHE_HOME/orderwatch/nacos`` (``~/.cache/orderwatch/nacos``). Below that,
    ``<namespace or public>/<group>/<data_id>``, so two namespaces never share a copy.
    """
    if cc.cache_dir:
        root = Path(cc.cache_dir).expanduser()
    else:
        db = _sqlite_file(database_url)
        root = (
            db.parent / ".orderwatch-nacos-cache"
            if db is not None
            else default_cache_root(env) / "nacos"
        )
    return root / (cc.namespace or "public") / cc.group / cc.data_id


@dataclass(frozen=True)
class CachedCopy:
    content: str
    saved_at: datetime


class ConfigCache:
    """The last good content of the data id, one file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()  # logs name it in full; cwd may change later

    def read(self) -> CachedCopy | None:
        try:
            content = self.path.read_text(encoding="utf-8")
            saved = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("config_cache_unreadable", path=str(self.path), error=str(exc))
            return None
        return CachedCopy(content, saved)

    def write(self, content: str) -> None:
        """Save ``content``; a full disk is logged, never raised: the reload still applies."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(content, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("config_cache_write_failed", path=str(self.path), error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# ---------------------------------------------------------------------------- HTTP client


def server_urls(cc: ConfigCenterSettings) -> list[str]:
    """``"a:8848,https://b"`` → ``["http://a:8848/nacos", "https://b/nacos"]``."""
    urls = []
    for part in cc.server.split(","):
        address = part.strip().rstrip("/")
        if "://" not in address:
            host_port = address
            if not host_port.rpartition("]")[2].count(":"):
                host_port = f"{host_port}:{DEFAULT_PORT}"
            address = f"http://{host_port}"
        urls.append(address + cc.context_path)
    return urls


class NacosClient:
    """The three calls of Nacos's HTTP open API that orderwatch needs.

    Servers given as a list are tried in turn: a failure moves to the next one.
    """

    def __init__(
        self, settings: ConfigCenterSettings, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.settings = settings
        self._urls = server_urls(settings)
        self._index = 0
        self._session = session
        self._own_session = session is None
        self._token: str | None = None
        self._token_until = 0.0

    @property
    def base_url(self) -> str:
        return self._urls[self._index]

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    def _next_server(self) -> None:
        self._index = (self._index + 1) % len(self._urls)
        self._token = None  # a token is per cluster, but a fresh login costs little

    # -- the API ---------------------------------------------------------------------------

    async def get_config(self) -> str | None:
        """The content of the data id; ``None`` when it does not exist."""
        cc = self.settings
        if cc.api == "v2":
            params = {"dataId": cc.data_id, "group": cc.group}
            if cc.namespace:
                params["namespaceId"] = cc.namespace
            status, text = await self._call("GET", "/v2/cs/config", params=params)
            return self._v2_content(status, text)
        params = {"dataId": cc.data_id, "group": cc.group}
        if cc.namespace:
            params["tenant"] = cc.namespace
        status, text = await self._call("GET", "/v1/cs/configs", params=params)
        if status == 200:
            return text
        if status == 404:
            return None
        raise NacosUnavailable(f"config get answered HTTP {status}: {text[:200]}")

    def _v2_content(self, status: int, text: str) -> str | None:
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200 and body.get("code") == 0 and isinstance(body.get("data"), str):
            data: str = body["data"]
            return data
        if status == 404 or body.get("code") == 20004:
            return None
        raise NacosUnavailable(f"config get (v2) answered HTTP {status}: {text[:200]}")

    async def listen(self, md5: str) -> bool:
        """Long poll: True as soon as the server's content differs from ``md5``.

        False when the pull timeout passed with no change. With ``api = "v2"`` (no HTTP
        listener there) it waits the pull timeout and compares a fresh read instead.
        """
        cc = self.settings
        pull = cc.pull_timeout.total_seconds()
        if cc.api == "v2":
            await asyncio.sleep(pull)
            content = await self.get_config()
            return (content_md5(content) if content is not None else "") != md5
        fields = [cc.data_id, cc.group, md5] + ([cc.namespace] if cc.namespace else [])
        probe = "\x02".join(fields) + "\x01"
        status, text = await self._call(
            "POST",
            "/v1/cs/configs/listener",
            data={"Listening-Configs": probe},
            headers={"Long-Pulling-Timeout": str(round(pull * 1000))},
            read_timeout=pull + max(pull / 2, cc.timeout.total_seconds()),
        )
        if status != 200:
            raise NacosUnavailable(f"listener answered HTTP {status}: {text[:200]}")
        return self._names_us(text)

    def _names_us(self, answer: str) -> bool:
        """Whether the listener's answer (``dataId^2group[^2tenant]^1`` URL-encoded) names us."""
        cc = self.settings
        for entry in unquote_plus(answer.strip()).split("\x01"):
            if not entry:
                continue
            parts = entry.split("\x02")
            tenant = parts[2] if len(parts) > 2 else ""
            if parts[:2] == [cc.data_id, cc.group] and tenant == cc.namespace:
                return True
        return False

    # -- transport -------------------------------------------------------------------------

    async def _login(self) -> None:
        cc = self.settings
        if cc.username is None or cc.password is None:
            return
        if self._token is not None and time.monotonic() < self._token_until:
            return
        status, text = await self._send(
            "POST",
            "/v1/auth/login",
            data={"username": cc.username, "password": cc.password.get_secret_value()},
        )
        if status in (401, 403):
            raise NacosDenied(f"login as {cc.username!r} refused (HTTP {status}): {text[:200]}")
        try:
            body = json.loads(text)
            token, ttl = body["accessToken"], float(body.get("tokenTtl", 18000))
        except (ValueError, KeyError, TypeError):
            raise NacosUnavailable(f"login answered HTTP {status}: {text[:200]}") from None
        if status != 200 or not isinstance(token, str):
            raise NacosUnavailable(f"login answered HTTP {status}: {text[:200]}")
        self._token = token
        self._token_until = time.monotonic() + ttl * 0.8  # log in again before it expires

    def _signature(self) -> dict[str, str]:
        """Access-key signing (Alibaba Cloud MSE/ACM): HMAC-SHA1 of tenant+group+time."""
        cc = self.settings
        if cc.access_key is None or cc.secret_key is None:
            return {}
        stamp = str(int(time.time() * 1000))
        signed = "+".join([*([cc.namespace] if cc.namespace else []), cc.group, stamp])
        digest = hmac.new(
            cc.secret_key.get_secret_value().encode(), signed.encode(), hashlib.sha1
        ).digest()
        return {
            "Spas-AccessKey": cc.access_key,
            "timeStamp": stamp,
            "Spas-Signature": base64.b64encode(digest).decode(),
        }

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> tuple[int, str]:
        """One API call, logged in; an expired token (403) gets one fresh login."""
        for attempt in (1, 2):
            await self._login()
            query = dict(params or {})
            if self._token is not None:
                query["accessToken"] = self._token
            status, text = await self._send(
                method,
                path,
                params=query,
                data=data,
                headers={**(headers or {}), **self._signature()},
                read_timeout=read_timeout,
            )
            if status == 403 and self._token is not None and attempt == 1:
                self._token = None
                continue
            if status in (401, 403):
                raise NacosDenied(
                    f"{path} refused (HTTP {status}): check config_center.username/password "
                    f"or access_key and the rights on the data id: {text[:200]}"
                )
            return status, text
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> tuple[int, str]:
        url = self.base_url + path
        total = read_timeout if read_timeout is not None else self.settings.timeout.total_seconds()
        try:
            async with self._http().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=total),
            ) as resp:
                text = await resp.text(encoding="utf-8")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            self._next_server()
            raise NacosUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if status >= 500:
            self._next_server()
            raise NacosUnavailable(f"{method} {url}: HTTP {status}: {text[:200]}")
        return status, text


# ---------------------------------------------------------------------------- start-up


async def load_initial(
    loaded: Loaded,
    *,
    client: NacosClient | None = None,
    env: Mapping[str, str] | None = None,
) -> Loaded:
    """``loaded`` with the config center's layer on top, as start-up needs it.

    Reads the data id once. Unreachable, or its content invalid → the cached copy, with a
    warning; no cached copy either → ConfigError (or, with ``required = false``, the file
    and environment alone, with a warning). The result's ``remote`` tells the watcher
    where to carry on from.
    """
    cc = loaded.settings.config_center
    if cc is None:
        return loaded
    cache = ConfigCache(cache_path(cc, loaded.settings.database.url, env=env))
    own = client is None
    client = client or NacosClient(cc)
    try:
        content = await client.get_config()
    except NacosUnavailable as exc:
        return _fallback(loaded, cc, cache, why=f"cannot reach Nacos: {exc}", seen_md5=None)
    finally:
        if own:
            await client.close()
    if content is None:
        log.warning(
            "config_center_data_id_missing",
            source=describe(cc),
            server=client.base_url,
            note="no such data id: running on the file and environment alone",
        )
        cache.remove()
        return replace(loaded, remote=RemoteState("", "", "none", cache.path, reached=True))
    md5 = content_md5(content)
    remote = RemoteState(md5, md5, "server", cache.path, reached=True)
    try:
        merged = layered(loaded, cc, content, remote=remote)
    except ConfigError as exc:
        log.error("config_center_content_invalid", source=describe(cc), problems=exc.problems)
        return _fallback(
            loaded, cc, cache, why="its content is invalid", seen_md5=md5, problems=exc.problems
        )
    cache.write(content)
    log.info(
        "config_center_loaded",
        source=describe(cc),
        server=client.base_url,
        md5=md5,
        keys=sum(1 for s in merged.sources.values() if s == "nacos"),
    )
    return merged


def _fallback(
    loaded: Loaded,
    cc: ConfigCenterSettings,
    cache: ConfigCache,
    *,
    why: str,
    seen_md5: str | None,
    problems: list[str] | None = None,
) -> Loaded:
    cached = cache.read()
    if cached is not None:
        md5 = content_md5(cached.content)
        remote = RemoteState(
            md5,
            md5 if seen_md5 is None else seen_md5,
            "cache",
            cache.path,
            reached=seen_md5 is not None,
        )
        try:
            merged = layered(loaded, cc, cached.content, remote=remote)
        except ConfigError as exc:
            log.error("config_cache_invalid", path=str(cache.path), problems=exc.problems)
        else:
            log.warning(
                "config_center_using_cache",
                source=describe(cc),
                reason=why,
                cache=str(cache.path),
                saved_at=cached.saved_at.isoformat(timespec="seconds"),
                note="the cached copy is in force; Nacos is retried and applied when it answers",
            )
            return merged
    if problems:
        raise ConfigError(problems)
    if cc.required:
        raise ConfigError(
            [
                f"config_center ({describe(cc)}): {why}; and there is no cached copy at "
                f"{cache.path}. Start Nacos or fix [config_center], or set "
                "config_center.required = false to start on the file and environment alone"
            ]
        )
    log.warning(
        "config_center_unavailable_no_cache",
        source=describe(cc),
        reason=why,
        cache=str(cache.path),
        note="running on the file and environment alone until Nacos answers",
    )
    return replace(
        loaded,
        remote=RemoteState("", seen_md5 or "", "none", cache.path, reached=seen_md5 is not None),
    )


# ---------------------------------------------------------------------------- watching


class _Stopped(Exception):
    pass


class ConfigWatcher:
    """Long-polls the data id and swaps each good update into the settings holder.

    Counters for metrics: ``applied_updates``, ``rejected_updates``; ``reachable`` and
    ``last_error`` say how the link to Nacos is; ``restart_required`` lists the keys whose
    new value waits for a restart. ``apply`` can be called directly (tests, a console).
    """

    def __init__(
        self,
        holder: SettingsHolder,
        loaded: Loaded,
        *,
        client: NacosClient | None = None,
        rng: random.Random | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        cc = loaded.settings.config_center
        if cc is None:
            raise ValueError("no [config_center] in the settings")
        self.holder = holder
        self.settings = cc
        self._loaded = loaded
        remote = loaded.remote or RemoteState()
        path = remote.cache_path or cache_path(cc, loaded.settings.database.url, env=env)
        self.cache = ConfigCache(path)
        self.client = client or NacosClient(cc)
        self._own_client = client is None
        self._rng = rng or random.Random()
        self._applied_md5 = remote.applied_md5
        self._seen_md5 = remote.seen_md5
        self.origin = remote.origin
        self.applied_updates = 0
        self.rejected_updates = 0
        self.restart_required: list[str] = []
        self.reachable = remote.reached
        self.last_error: str | None = None
        self._stop = asyncio.Event()

    # -- applying --------------------------------------------------------------------------

    def apply(self, content: str | None) -> bool:
        """Validate ``content`` (``None``: the data id is gone) and put it in force.

        Returns True when the settings were replaced, False when the content was already
        in force or was rejected (logged, counted; the last good config stays).
        """
        cc = self.settings
        md5 = content_md5(content) if content is not None else ""
        self._seen_md5 = md5
        if md5 == self._applied_md5:  # already in force (from the cache, say)
            self.origin = "server" if content is not None else "none"
            return False
        try:
            new = layered(self._loaded, cc, content, remote=RemoteState(md5, md5, "server"))
        except ConfigError as exc:
            self.rejected_updates += 1
            log.error(
                "config_update_rejected",
                source=describe(cc),
                md5=md5,
                problems=exc.problems,
                rejected_updates=self.rejected_updates,
                note="the last good config stays in force",
            )
            return False
        running = self.holder.current
        settings, sources, held = keep_restart_only(
            running, self.holder.sources, new.settings, new.sources
        )
        self.restart_required = held
        if held:
            log.warning(
                "config_restart_required",
                source=describe(cc),
                keys=held,
                note="these keys keep their running value until orderwatch is restarted",
            )
        changed = changed_keys(running, settings)
        self.holder.replace(settings, sources)
        self._applied_md5 = md5
        self.origin = "server" if content is not None else "none"
        self.applied_updates += 1
        if content is None:
            self.cache.remove()
            log.warning(
                "config_center_data_id_missing",
                source=describe(cc),
                note="the data id was deleted: running on the file and environment alone",
            )
        else:
            self.cache.write(content)
        log.info(
            "config_reloaded",
            source=describe(cc),
            md5=md5,
            changed=changed,
            version=self.holder.version,
        )
        return True

    # -- the loop --------------------------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return; an in-flight long poll is abandoned."""
        self._stop.set()

    async def close(self) -> None:
        if self._own_client:
            await self.client.close()

    async def run(self) -> None:
        """Listen, fetch and apply until :meth:`stop`; outages are retried with backoff."""
        cc = self.settings
        failures = 0
        down_since: float | None = None if self.reachable else time.monotonic()
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                changed = await self._until_stopped(self.client.listen(self._seen_md5))
                if changed:
                    before = self._seen_md5
                    content = await self._until_stopped(self.client.get_config())
                    self.apply(content)
                    if self._seen_md5 == before:  # the listener cried wolf: do not spin
                        await self._until_stopped(asyncio.sleep(self._delay(1)))
                elif time.monotonic() - started < cc.pull_timeout.total_seconds() / 4:
                    await self._until_stopped(asyncio.sleep(self._delay(1)))  # no hold
                if not self.reachable:
                    log.info(
                        "config_center_reachable",
                        source=describe(cc),
                        server=self.client.base_url,
                        after_seconds=round(time.monotonic() - (down_since or started), 1),
                    )
                self.reachable, self.last_error, failures, down_since = True, None, 0, None
            except _Stopped:
                break
            except NacosUnavailable as exc:
                failures += 1
                down_since = down_since or time.monotonic()
                self.reachable, self.last_error = False, str(exc)
                delay = self._delay(failures)
                log.warning(
                    "config_center_unreachable",
                    source=describe(cc),
                    error=str(exc),
                    attempt=failures,
                    retry_in=round(delay, 3),
                    note="the config in force stays",
                )
                with contextlib.suppress(_Stopped):
                    await self._until_stopped(asyncio.sleep(delay))
            except Exception:
                failures += 1
                log.exception("config_watcher_error", source=describe(cc), attempt=failures)
                with contextlib.suppress(_Stopped):
                    await self._until_stopped(asyncio.sleep(self._delay(failures)))

    def _delay(self, failures: int) -> float:
        cc = self.settings
        first, cap = cc.retry_initial.total_seconds(), cc.retry_max.total_seconds()
        base = min(first * 2 ** min(failures - 1, 30), cap)
        return self._rng.uniform(base * 0.8, base * 1.2)

    async def _until_stopped(self, aw: Awaitable[T]) -> T:
        if self._stop.is_set():
            if asyncio.iscoroutine(aw):
                aw.close()
            raise _Stopped
        work = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        raise _Stopped


@asynccontextmanager
async def watch_config(
    holder: SettingsHolder, loaded: Loaded, **kwargs: Any
) -> AsyncIterator[ConfigWatcher | None]:
    """Run a :class:`ConfigWatcher` beside the body; nothing when there is no
    ``[config_center]``.

    ::

        async with watch_config(service.settings, loaded):
            await worker.run()
    """
    if loaded.settings.config_center is None:
        yield None
        return
    watcher = ConfigWatcher(holder, loaded, **kwargs)
    task = asyncio.create_task(watcher.run(), name="orderwatch-config-watcher")
    try:
        yield watcher
    finally:
        watcher.stop()
        try:
            await task
        finally:
            await watcher.close()


__all__ = [
    "CachedCopy",
    "ConfigCache",
    "ConfigWatcher",
    "NacosClient",
    "NacosDenied",
    "NacosUnavailable",
    "cache_path",
    "content_format",
    "content_md5",
    "describe",
    "layered",
    "load_initial",
    "parse_content",
    "parse_properties",
    "server_urls",
    "watch_config",
]
