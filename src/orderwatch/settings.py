"""Typed settings (DESIGN §8) and where each value came from.

Sources, lowest first: defaults < ``orderwatch.toml`` < ``ORDERWATCH_*`` environment
variables (``ORDERWATCH_DATABASE__URL`` sets ``database.url``) < the config center (a Nacos
data id, see :mod:`orderwatch.config_center`, layered on with :func:`with_layer`). A wrong
key or value stops start-up with the dotted key, the source it came from and what is
allowed.

The engine never keeps a copy of a setting: it asks a :class:`SettingsHolder` for the
current policy of a vendor each time it computes a schedule, so that a reload changes what
happens next without a restart. Keys that running code cannot pick up (``RESTART_ONLY``)
keep their running value on a reload; :func:`keep_restart_only` says which ones changed.
"""

from __future__ import annotations

import copy
import math
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .lifecycle import Policy
from .vendor_mapping import VendorMapping

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_MAX_SECONDS = 36500 * 86400.0  # far past any schedule, far below timedelta's limit


def parse_duration(value: Any) -> timedelta:
    """``200ms``, ``10m``, ``6h``, ``7d``, or a plain number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like '200ms', '10m', '6h', '7d' or seconds")
    seconds: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        seconds = value
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds is not None:
        if not math.isfinite(seconds) or seconds > _MAX_SECONDS:
            raise ValueError(f"{value!r} is too long: at most 36500d (100 years)")
        return timedelta(seconds=seconds)
    raise ValueError(
        f"expected a duration like '200ms', '10m', '6h', '7d' or seconds, got {value!r}"
    )


def format_duration(td: timedelta | float) -> str:
    seconds = td.total_seconds() if isinstance(td, timedelta) else float(td)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and (seconds * 1000) == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _longer_than_zero(v: timedelta) -> timedelta:
    if v <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return v


PositiveDuration = Annotated[Duration, AfterValidator(_longer_than_zero)]


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """``env:NAME`` → NAME from the mapping load_settings was given, else the process's."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        context = info.context if isinstance(info.context, Mapping) else {}
        given: Mapping[str, str] = context.get("env", {})
        if name in given:
            return given[name]
        if name in os.environ:
            return os.environ[name]
        raise ValueError(f"environment variable {name} (named by 'env:{name}') is not set")
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _is_number_type(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    return (
        isinstance(annotation, type)
        and issubclass(annotation, int | float)
        and not issubclass(annotation, bool)
    )


class _Section(BaseModel):
    """A settings table whose numbers are numbers: pydantic would read ``true`` as 1."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and _is_number_type(field.annotation):
            raise ValueError(f"must be a number, not {str(v).lower()}")
        return v


class PollingSettings(_Section):
    model_config = _STRICT

    initial_delay: Duration = timedelta(minutes=10)
    initial_interval: Duration = timedelta(minutes=5)
    factor: float = Field(2.0, ge=1.0, le=100.0)
    max_interval: Duration = timedelta(hours=6)
    jitter: float = Field(0.1, ge=0.0, lt=1.0)
    max_polls: int = Field(30, ge=1, le=100_000)
    deadline: Duration = timedelta(days=7)
    not_found_limit: int = Field(3, ge=1)
    payment_grace: Duration = timedelta(0)
    on_place_unknown: Literal["reconcile", "fail"] = "reconcile"
    reconcile_attempts: int = Field(5, ge=1)

    @field_validator("initial_interval", "max_interval", "deadline")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        return _longer_than_zero(v)


class PollingOverride(_Section):
    """Per-vendor ``[vendors.NAME.polling]``: any key of ``[polling]``, unset ones inherited."""

    model_config = _STRICT

    initial_delay: Duration | None = None
    initial_interval: Duration | None = None
    factor: float | None = Field(None, ge=1.0, le=100.0)
    max_interval: Duration | None = None
    jitter: float | None = Field(None, ge=0.0, lt=1.0)
    max_polls: int | None = Field(None, ge=1, le=100_000)
    deadline: Duration | None = None
    not_found_limit: int | None = Field(None, ge=1)
    payment_grace: Duration | None = None
    on_place_unknown: Literal["reconcile", "fail"] | None = None
    reconcile_attempts: int | None = Field(None, ge=1)


VendorOutcomeName = Literal["succeeded", "failed", "processing", "shipped"]

DEFAULT_STATUS_MAP: dict[str, VendorOutcomeName] = {
    "PROCESSING": "processing",
    "SHIPPED": "shipped",
    "DELIVERED": "succeeded",
    "FAILED": "failed",
}


class CircuitBreakerSettings(_Section):
    """``[vendors.NAME.circuit_breaker]``: stop calling a vendor that keeps failing.

    After ``failures`` transport failures in a row (timeouts, refused or dropped connections,
    HTTP 5xx other than a maintenance 503) the vendor is paused for ``open_for`` (schedule
    time), like an operator's pause: its orders keep their place and wait; then one call is
    let through, and one more failure opens it again. ``failures = 0`` turns it off.
    """

    model_config = _STRICT

    failures: int = Field(10, ge=0, le=1_000_000)
    open_for: PositiveDuration = timedelta(minutes=5)


class VendorSettings(_Section):
    model_config = _STRICT

    adapter: str = "reference"
    base_url: str
    merchant_id: str = Field(min_length=1, max_length=64)
    # Signing (vendors/signing.py; README "Signing schemes"). sign_type comes before the
    # keys: their validators read it.
    sign_type: Literal["HMAC-SHA256", "MD5", "WECHAT-HMAC-SHA256", "RSA2", "SM3", "SM2"] = (
        "HMAC-SHA256"
    )
    secret: Secret | None = Field(None, validate_default=True)  # the symmetric schemes
    private_key: Secret | None = Field(None, validate_default=True)  # ours: RSA2, SM2
    vendor_public_key: Secret | None = Field(None, validate_default=True)  # RSA2, SM2
    sm2_user_id: str = Field("1234567812345678", min_length=1, max_length=1024)
    sign_exclude: list[str] = Field(default_factory=list)  # besides sign_field itself
    sign_keep_empty: bool = False
    sign_hex_case: Literal["lower", "upper"] | None = None
    sign_location: Literal["body", "header"] = "body"
    sign_field: str = Field("sign", min_length=1, max_length=64)
    sign_header: str = Field("X-Signature", min_length=1, max_length=64)
    timeout: PositiveDuration = timedelta(seconds=5)
    concurrency: int = Field(32, ge=1, le=10_000)
    # requests per second to this vendor from each worker process; unset: no limit
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    polling: PollingOverride = PollingOverride()
    status_map: dict[str, VendorOutcomeName] = Field(
        default_factory=lambda: dict(DEFAULT_STATUS_MAP)
    )
    # the vendor's protocol for adapter = "mapped" (see vendor_mapping.py)
    mapping: VendorMapping | None = Field(None, validate_default=True)

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, v: VendorMapping | None, info: ValidationInfo) -> VendorMapping | None:
        adapter = info.data.get("adapter")
        if adapter == "mapped" and v is None:
            raise ValueError(
                "required when adapter = 'mapped': add [vendors.NAME.mapping] with its "
                "place and query tables (README, 'Connecting a vendor by config')"
            )
        if adapter == "reference" and v is not None:
            raise ValueError("only read by adapter = 'mapped'; this vendor uses 'reference'")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("secret")
    @classmethod
    def _secret_for_scheme(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        sign_type = info.data.get("sign_type")
        if sign_type is None or sign_type in ("RSA2", "SM2"):
            return v  # optional with keys (kept valid when set); a bad sign_type is reported
        if v is None:
            from pydantic_core import PydanticCustomError

            raise PydanticCustomError("missing", "Field required")
        if not v.get_secret_value():
            raise ValueError(f"must not be empty for sign_type {sign_type}")
        return v

    @field_validator("private_key", "vendor_public_key")
    @classmethod
    def _key_for_scheme(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Read (file) and parse the key once, here: a bad key stops start-up, not a call."""
        from .vendors import signing

        sign_type = info.data.get("sign_type")
        if sign_type is None:
            return v
        whose = "our private key" if info.field_name == "private_key" else "the vendor's key"
        if sign_type not in ("RSA2", "SM2"):
            if v is not None:
                raise ValueError(f"only used by sign_type RSA2 or SM2, not {sign_type}")
            return v
        if v is None:
            raise ValueError(
                f"required for sign_type {sign_type}: {whose} as PEM text, a file path or "
                "'env:NAME'" + (" (SM2: or hex)" if sign_type == "SM2" else "")
            )
        try:
            text = signing.read_key_text(v.get_secret_value())
            if info.field_name == "private_key":
                signing.load_private_key(text, sign_type)
            else:
                signing.load_public_key(text, sign_type)
        except signing.KeyFormatError as exc:
            raise ValueError(f"{whose} for {sign_type} {exc}") from None
        return SecretStr(text)

    @field_validator("sign_exclude", mode="before")
    @classmethod
    def _exclude_names(cls, v: Any) -> Any:
        if isinstance(v, str):  # "a, b" from an environment variable
            v = [part.strip() for part in v.split(",") if part.strip()]
        if isinstance(v, list) and any(isinstance(name, str) and not name for name in v):
            raise ValueError("field names must not be empty")
        return v

    @field_validator("sign_header")
    @classmethod
    def _header_name(cls, v: str) -> str:
        if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", v):
            raise ValueError(f"{v!r} is not an HTTP header name")
        return v


class DatabaseSettings(BaseModel):
    model_config = _STRICT

    url: str = "sqlite:///orderwatch.db"

    @field_validator("url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        from sqlalchemy.exc import ArgumentError

        from .store.sql import engine_url

        try:
            backend = engine_url(v).get_backend_name()  # the dialect the store will speak
        except ArgumentError:
            raise ValueError(
                "not a database URL; expected sqlite:///PATH, postgresql://… or mysql://…"
            ) from None
        if backend not in ("sqlite", "postgresql", "mysql"):
            raise ValueError(
                f"unsupported database {backend!r}: use sqlite, postgresql or mysql (MariaDB)"
            )
        return v


class WorkerSettings(_Section):
    model_config = _STRICT

    batch_size: int = Field(100, ge=1, le=10_000)
    concurrency: int = Field(64, ge=1, le=10_000)
    lease: Duration = timedelta(seconds=60)
    shutdown_grace: Duration = timedelta(seconds=10)

    @field_validator("lease")
    @classmethod
    def _lease(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return v


class ApiToken(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64)
    token: Secret
    role: Literal["platform", "operator", "viewer"]

    @field_validator("token")
    @classmethod
    def _presentable(cls, v: SecretStr) -> SecretStr:
        text = v.get_secret_value()
        if not text.strip():
            raise ValueError("must not be empty")
        if text != text.strip():
            raise ValueError(
                "has leading or trailing whitespace (a secret file's last newline?): "
                "no Authorization header can carry it"
            )
        return v


def _host_port(listen: str) -> tuple[str, int] | None:
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit():
        return None
    if not 0 <= int(port_text) <= 65535:
        return None
    return host.strip("[]") or "0.0.0.0", int(port_text)  # ":8080": every interface


def parse_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8080``, ``[::1]:8080``, ``:8080`` (all interfaces) → (host, port)."""
    parsed = _host_port(listen)
    if parsed is None:
        raise ConfigError([f"api.listen: expected HOST:PORT, got {listen!r}"])
    return parsed


class ApiSettings(BaseModel):
    model_config = _STRICT

    listen: str = "127.0.0.1:8080"
    tokens: list[ApiToken] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, v: str) -> str:
        """Checked with the rest of the file (``config check``), not first when serving."""
        if _host_port(v) is None:
            raise ValueError(f"expected HOST:PORT (port 0-65535), got {v!r}")
        return v

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, v: list[ApiToken]) -> list[ApiToken]:
        first: dict[str, int] = {}
        for i, t in enumerate(v):
            j = first.setdefault(t.token.get_secret_value(), i)
            if j != i:
                raise ValueError(
                    f"api.tokens[{i}] ({t.name!r}) has the same token as api.tokens[{j}] "
                    f"({v[j].name!r}): a caller would get the first one's role only"
                )
        return v


NotifyEvent = Literal["order.shipped", "order.succeeded", "order.failed", "order.reopened"]


def _default_events() -> list[NotifyEvent]:
    return ["order.shipped", "order.succeeded", "order.failed"]


def _split_list(value: Any) -> Any:
    """``"a, b"`` → ``["a", "b"]``: lists given where only strings fit (env, properties)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class NotifySettings(BaseModel):
    model_config = _STRICT

    webhook_url: str | None = None
    secret: Secret | None = None
    initial_interval: Duration = timedelta(seconds=30)
    max_interval: Duration = timedelta(hours=1)
    max_age: Duration = timedelta(days=3)
    events: Annotated[list[NotifyEvent], BeforeValidator(_split_list)] = Field(
        default_factory=_default_events
    )


_NACOS_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")
_NACOS_SERVER = re.compile(r"^(?:https?://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?/?$")


class ConfigCenterSettings(BaseModel):
    """``[config_center]``: where the Nacos data id is and how to talk to it.

    Read from the file and the environment only: the data id cannot move itself.
    """

    model_config = _STRICT

    server: str = "127.0.0.1:8848"  # host:port or http(s)://host:port, comma-separated
    context_path: str = "/nacos"
    namespace: str = ""  # namespace *id* (tenant); "" is the public namespace
    group: str = "DEFAULT_GROUP"
    data_id: str = "orderwatch.toml"
    format: Literal["auto", "toml", "properties", "yaml"] = "auto"  # auto: by extension
    api: Literal["v1", "v2"] = "v1"  # v2: config get of Nacos ≥ 2.2, polled (no listener)
    username: str | None = None
    password: Secret | None = None
    access_key: str | None = None
    secret_key: Secret | None = None
    timeout: Duration = timedelta(seconds=5)  # one HTTP request (login, config get)
    pull_timeout: Duration = timedelta(seconds=30)  # how long the listener holds a request
    retry_initial: Duration = timedelta(seconds=1)  # backoff while Nacos is unreachable …
    retry_max: Duration = timedelta(seconds=60)  # … up to this
    cache_dir: str | None = None  # default: beside the SQLite file, else ~/.cache/orderwatch
    required: bool = True  # no server and no cached copy at start: stop (true) or go on

    @field_validator("server")
    @classmethod
    def _servers(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",")]
        if not all(parts) or not all(_NACOS_SERVER.match(p) for p in parts):
            raise ValueError(
                "must be host:port or http(s)://host:port, several separated by commas"
            )
        return ",".join(parts)

    @field_validator("context_path")
    @classmethod
    def _context_path(cls, v: str) -> str:
        if v and not re.match(r"^/[A-Za-z0-9._/-]*$", v):
            raise ValueError("must be empty or a path starting with '/', like '/nacos'")
        return v.rstrip("/")

    @field_validator("data_id", "group")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NACOS_NAME.match(v) or len(v) > 256:
            raise ValueError("must be 1-256 of A-Z, a-z, 0-9, '.', ':', '_' and '-'")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if v and (not _NACOS_NAME.match(v) or len(v) > 128):
            raise ValueError(
                "must be a namespace id: 0-128 of A-Z, a-z, 0-9, '.', ':', '_' and '-'"
            )
        return v

    @field_validator("timeout", "pull_timeout", "retry_initial", "retry_max")
    @classmethod
    def _at_least_10ms(cls, v: timedelta) -> timedelta:
        if v < timedelta(milliseconds=10):
            raise ValueError("must be at least 10ms")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> ConfigCenterSettings:
        if self.username is not None and self.password is None:
            raise ValueError("username is set but password is not: give both or neither")
        if self.access_key is not None and self.secret_key is None:
            raise ValueError("access_key is set but secret_key is not: give both or neither")
        return self


class LogSettings(BaseModel):
    model_config = _STRICT

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


_VENDOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Settings(BaseModel):
    model_config = _STRICT

    database: DatabaseSettings = DatabaseSettings()
    polling: PollingSettings = PollingSettings()
    worker: WorkerSettings = WorkerSettings()
    vendors: dict[str, VendorSettings] = Field(default_factory=dict)
    api: ApiSettings = ApiSettings()
    notify: NotifySettings = NotifySettings()
    config_center: ConfigCenterSettings | None = None
    log: LogSettings = LogSettings()

    @field_validator("vendors")
    @classmethod
    def _vendor_names(cls, v: dict[str, VendorSettings]) -> dict[str, VendorSettings]:
        for name in v:
            if not _VENDOR_NAME.match(name):
                raise ValueError(
                    f"vendor name {name!r} must be 1-64 of a-z, 0-9, '_' and '-', "
                    "starting with a letter or digit"
                )
        return v

    def policy(self, vendor: str | None = None) -> Policy:
        """The polling policy of ``vendor``: ``[polling]`` with its overrides applied."""
        merged = self.polling.model_dump()
        if vendor is not None and vendor in self.vendors:
            overrides = self.vendors[vendor].polling.model_dump(exclude_none=True)
            merged.update(overrides)
        return Policy(
            initial_delay=merged["initial_delay"].total_seconds(),
            initial_interval=merged["initial_interval"].total_seconds(),
            factor=merged["factor"],
            max_interval=merged["max_interval"].total_seconds(),
            jitter=merged["jitter"],
            max_polls=merged["max_polls"],
            deadline=merged["deadline"].total_seconds(),
            not_found_limit=merged["not_found_limit"],
            payment_grace=merged["payment_grace"].total_seconds(),
            on_place_unknown=merged["on_place_unknown"],
            reconcile_attempts=merged["reconcile_attempts"],
        )


class SettingsHolder:
    """The settings in force. The engine asks it on every schedule it computes.

    ``replace`` swaps in a new, already validated, Settings; policies are cached per
    version so the hot path pays a dict lookup, not a merge. A vendor whose settings did
    not change keeps its settings *object*, so the vendor registry (which rebuilds an
    adapter when that object changes) keeps its connections across unrelated reloads.
    """

    def __init__(self, settings: Settings, sources: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self.sources: dict[str, str] = dict(sources or {})
        self.version = 0
        self._policies: dict[str | None, Policy] = {}

    @property
    def current(self) -> Settings:
        return self._settings

    def replace(self, settings: Settings, sources: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._settings = _reuse_unchanged(self._settings, settings)
            if sources is not None:
                self.sources = dict(sources)
            self._policies = {}
            self.version += 1

    def policy(self, vendor: str | None) -> Policy:
        policies = self._policies
        p = policies.get(vendor)
        if p is None:
            p = policies[vendor] = self._settings.policy(vendor)
        return p

    def vendor_known(self, vendor: str) -> bool:
        return vendor in self._settings.vendors


def _reuse_unchanged(old: Settings, new: Settings) -> Settings:
    vendors = {
        name: old.vendors[name] if old.vendors.get(name) == cfg else cfg
        for name, cfg in new.vendors.items()
    }
    if all(vendors[name] is cfg for name, cfg in new.vendors.items()):
        return new
    return new.model_copy(update={"vendors": vendors})


# ---------------------------------------------------------------- what a reload may change

#: Keys a running process cannot pick up: a reload that changes them keeps the running
#: value and logs that a restart is needed. Everything else (polling, vendors, notify,
#: api tokens) is read from the :class:`SettingsHolder` when it is used.
RESTART_ONLY: tuple[str, ...] = ("database", "worker", "api.listen", "log", "config_center")


def flat_values(settings: Settings) -> dict[str, Any]:
    """``dotted.key → value`` for every key, secrets unmasked: for comparing, never showing."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, BaseModel):
            node = {name: getattr(node, name) for name in type(node).model_fields}
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
            return
        if isinstance(node, list) and node and all(isinstance(i, BaseModel) for i in node):
            for i, item in enumerate(node):
                walk(item, f"{prefix}[{i}]")
            return
        out[prefix] = node.get_secret_value() if isinstance(node, SecretStr) else node

    walk(settings, "")
    return out


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The dotted keys whose value differs between two settings (added and removed too)."""
    a, b = flat_values(old), flat_values(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _ABSENT) != b.get(k, _ABSENT))


_ABSENT = object()


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((prefix + ".", prefix + "["))


def keep_restart_only(
    running: Settings,
    running_sources: Mapping[str, str],
    new: Settings,
    new_sources: Mapping[str, str],
) -> tuple[Settings, dict[str, str], list[str]]:
    """``new`` with every ``RESTART_ONLY`` key set back to its running value.

    Returns the settings to apply, their sources, and the dotted keys that were held back
    (so the caller can say a restart is needed to apply them).
    """
    changed = changed_keys(running, new)
    held = [k for k in changed if any(_under(k, p) for p in RESTART_ONLY)]
    if not held:
        return new, dict(new_sources), []
    settings = new
    for prefix in RESTART_ONLY:
        if any(_under(k, prefix) for k in held):
            settings = _with_value(settings, prefix.split("."), _get(running, prefix.split(".")))
    sources = {k: v for k, v in new_sources.items() if not any(_under(k, p) for p in RESTART_ONLY)}
    sources.update(
        {k: v for k, v in running_sources.items() if any(_under(k, p) for p in RESTART_ONLY)}
    )
    return settings, sources, held


def _get(model: BaseModel, parts: list[str]) -> Any:
    value: Any = model
    for part in parts:
        value = getattr(value, part)
    return value


def _with_value(model: BaseModel, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return model.model_copy(update={parts[0]: value})
    child = getattr(model, parts[0])
    return model.model_copy(update={parts[0]: _with_value(child, parts[1:], value)})


# ---------------------------------------------------------------- loading with sources


@dataclass(frozen=True)
class RemoteState:
    """What the config center gave at start, for the watcher that carries on from there.

    ``applied_md5`` is the MD5 of the content in force ("" for none), ``seen_md5`` that of
    the server's latest content (differs when it was rejected), ``origin`` where the
    content in force came from: ``server``, ``cache`` (server unreachable or its content
    invalid) or ``none`` (no data id on the server, or unreachable with no cache).
    """

    applied_md5: str = ""
    seen_md5: str = ""
    origin: Literal["server", "cache", "none"] = "none"
    cache_path: Path | None = None
    reached: bool = False  # whether the server answered at start


@dataclass
class Loaded:
    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> default|file|env|nacos
    path: Path | None = None
    #: the raw merged data and sources of defaults < file < env (< overrides), before any
    #: config-center layer: a reload layers the new content on this, never on the last one
    base: dict[str, Any] = field(default_factory=dict)
    base_sources: dict[str, str] = field(default_factory=dict)
    #: source → how errors name it ("file /etc/orderwatch.toml", "nacos data id …")
    labels: dict[str, str] = field(default_factory=dict)
    remote: RemoteState | None = None
    #: the environment ``env:NAME`` secrets are read from (None: the process's)
    env: Mapping[str, str] | None = field(default=None, repr=False)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """``ORDERWATCH_A__B=1`` → ``{"a": {"b": "1"}}``; ``ORDERWATCH_CONFIG`` is the file path."""
    layer: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("ORDERWATCH_") or name in _NOT_KEYS:
            continue
        dotted = ".".join(part.lower() for part in name[len("ORDERWATCH_") :].split("__"))
        if dotted:
            _set_dotted(layer, dotted, value)
    return layer


_NOT_KEYS = {"ORDERWATCH_CONFIG", "ORDERWATCH_LOG_FORMAT", "ORDERWATCH_LOG_LEVEL"}


def env_name(dotted: str) -> str:
    """The environment variable that sets ``dotted``: ``polling.max_polls`` →
    ``ORDERWATCH_POLLING__MAX_POLLS``."""
    return "ORDERWATCH_" + "__".join(part.upper() for part in dotted.split("."))


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = _merge({}, value)
        else:
            base[key] = value
    return base


def _model_at(parts: list[str]) -> type[BaseModel] | None:
    """The settings model found at ``parts`` (``["vendors", "acme"]`` → VendorSettings)."""
    node: Any = Settings
    i = 0
    while i < len(parts):
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return None
        info = node.model_fields.get(parts[i])
        if info is None:
            return None
        node, i = _unwrap(info.annotation), i + 1
        origin = get_origin(node)
        if origin is dict or origin is list:  # a vendor name, a token index
            node, i = _unwrap(get_args(node)[-1]), i + 1
    if i > len(parts):
        return None
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``; ``Annotated[X, ...]`` → ``X``."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _origin_of(loc: str, sources: Mapping[str, str]) -> tuple[list[str], bool]:
    """The sources that set ``loc`` (exact), or for a missing key those of the keys around it."""
    if loc in sources:
        return [sources[loc]], True
    probe = loc
    while probe:
        found = {k: s for k, s in sources.items() if _under(k, probe) or _under(probe, k)}
        if found:
            exact = len(found) == 1 and _under(loc, next(iter(found)))
            order = ["default", "file", "env", "override", "nacos"]
            ranked = sorted(set(found.values()), key=lambda s: order.index(s) if s in order else 99)
            return ranked, exact
        probe = probe.rpartition(".")[0]
    return ["default"], False


def _label(source: str, key: str | None, labels: Mapping[str, str]) -> str:
    if source == "env":
        return f"env {env_name(key)}" if key else "env"
    return labels.get(source, source)


def _explain(
    error: ValidationError, sources: Mapping[str, str], labels: Mapping[str, str] | None = None
) -> list[str]:
    labels = labels or {}
    lines = []
    for err in error.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        # pydantic puts the field before its validator tag; drop the tags it adds for unions
        parts = [p for p in parts if not _TAG.match(p)]
        loc = ".".join(parts)
        shown = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", loc)  # api.tokens.0.role → api.tokens[0].role
        origins, exact = _origin_of(loc, sources)
        where = ", ".join(_label(s, loc if exact else None, labels) for s in origins)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            model = _model_at(parts[:-1])
            allowed = ", ".join(model.model_fields) if model is not None else ""
            msg = f"unknown key; allowed here: {allowed}" if allowed else "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] in ("model_type", "dict_type"):
            msg = f"must be a table ([{loc}]), got {type(err['input']).__name__}"
        lines.append(f"{shown or '(root)'} ({where}): {msg}")
    return lines


_TAG = re.compile(r"^(?:str|int|float|bool|timedelta|list\[.*\]|literal\[.*\])$")


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if env.get("ORDERWATCH_CONFIG"):
        return Path(env["ORDERWATCH_CONFIG"])
    candidate = Path("orderwatch.toml")
    return candidate if candidate.exists() else None


def _validate(
    data: Mapping[str, Any],
    sources: Mapping[str, str],
    labels: Mapping[str, str],
    env: Mapping[str, str],
) -> Settings:
    try:
        settings = Settings.model_validate(data, context={"env": env})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, sources, labels)) from None
    _check_adapters(settings, sources, labels)
    return settings


def _check_adapters(
    settings: Settings, sources: Mapping[str, str], labels: Mapping[str, str]
) -> None:
    """Every vendor's adapter exists: a typo stops start-up, not each order at its call."""
    from .vendors import adapter_factory

    problems: list[str] = []
    for name, vendor in settings.vendors.items():
        try:
            adapter_factory(vendor.adapter)
        except ConfigError as exc:
            key = f"vendors.{name}.adapter"
            origins, exact = _origin_of(key, sources)
            where = ", ".join(_label(s, key if exact else None, labels) for s in origins)
            problems.extend(
                p.replace("vendors.*.adapter", f"{key} ({where})") for p in exc.problems
            )
    if problems:
        raise ConfigError(problems)


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Loaded:
    """Read defaults < file < environment (< ``overrides``, for tests and the demo).

    The config center is not read here (it needs the network): see
    :func:`orderwatch.config_center.load_initial`, which layers it on with
    :func:`with_layer`. Raises :class:`~orderwatch.errors.ConfigError` naming every bad
    key and its source.
    """
    env = os.environ if env is None else env
    file_path = Path(path) if path is not None else default_config_path(env)
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    labels: dict[str, str] = {}
    if file_path is not None:
        labels["file"] = f"file {file_path}"
        try:
            with file_path.open("rb") as fh:
                file_data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([f"config file {file_path} does not exist"]) from None
        except IsADirectoryError:
            raise ConfigError([f"config file {file_path} is a directory"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{file_path}: not valid TOML: {exc}"]) from None
        _merge(data, file_data)
        sources.update(dict.fromkeys(_flatten(file_data), "file"))
    env_data = _env_layer(env)
    _merge(data, env_data)
    sources.update(dict.fromkeys(_flatten(env_data), "env"))
    if overrides:
        _merge(data, overrides)
        sources.update(dict.fromkeys(_flatten(overrides), "override"))
    settings = _validate(data, sources, labels, env)
    return Loaded(
        settings,
        sources,
        file_path,
        base=copy.deepcopy(data),
        base_sources=dict(sources),
        labels=labels,
        env=env,
    )


def with_layer(
    loaded: Loaded,
    layer: Mapping[str, Any],
    *,
    source: str = "nacos",
    label: str | None = None,
    remote: RemoteState | None = None,
) -> Loaded:
    """``loaded``'s defaults, file and environment with ``layer`` on top, validated whole.

    The layer replaces whatever an earlier layer of the same kind gave: it goes on
    ``loaded.base``, never on ``loaded.settings``. ``config_center`` cannot be set from
    the layer (the data id would move itself). Raises ConfigError naming the key and the
    source.
    """
    labels = {**loaded.labels, source: label or source}
    if "config_center" in layer:
        raise ConfigError(
            [
                f"config_center ({labels[source]}): cannot be set from the config center "
                "itself; set it in orderwatch.toml or ORDERWATCH_CONFIG_CENTER__* variables"
            ]
        )
    data = _merge(copy.deepcopy(loaded.base), layer)
    sources = dict(loaded.base_sources)
    sources.update(dict.fromkeys(_flatten(layer), source))
    env = os.environ if loaded.env is None else loaded.env
    settings = _validate(data, sources, labels, env)
    return Loaded(
        settings,
        sources,
        loaded.path,
        base=loaded.base,
        base_sources=loaded.base_sources,
        labels=labels,
        remote=remote if remote is not None else loaded.remote,
        env=loaded.env,
    )


def effective_lines(loaded: Loaded) -> list[tuple[str, str, str]]:
    """``(dotted.key, value, source)`` for every key in force, secrets masked.

    The source is ``default``, ``file``, ``env`` or ``nacos`` (``override`` in tests).
    """
    dumped = loaded.settings.model_dump(mode="python")
    rows: list[tuple[str, str, str]] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
            return
        if isinstance(node, list) and node and all(isinstance(i, dict) for i in node):
            for i, item in enumerate(node):
                walk(item, f"{prefix}[{i}]")
            return
        rows.append((prefix, _show(node), _source_of(prefix, loaded.sources)))

    walk(dumped, "")
    return rows


def _source_of(dotted: str, sources: Mapping[str, str]) -> str:
    plain = re.sub(r"\[\d+\]", "", dotted)
    if plain in sources:
        return sources[plain]
    for key, src in sources.items():
        if plain.startswith(key + ".") or key.startswith(plain + "."):
            return src
    return "default"


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, timedelta):
        return format_duration(value)
    if value is None:
        return "(unset)"
    if value == "":
        return '""'
    if isinstance(value, str):
        return value
    return repr(value) if not isinstance(value, list) else "[" + ", ".join(map(str, value)) + "]"
