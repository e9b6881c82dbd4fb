"""Typed settings (DESIGN §8) and where each value came from.

Sources, lowest first: defaults < ``orderwatch.toml`` < ``ORDERWATCH_*`` environment
variables (``ORDERWATCH_DATABASE__URL`` sets ``database.url``). A wrong key or value stops
start-up with the dotted key, the source it came from and what is allowed.

The engine never keeps a copy of a setting: it asks a :class:`SettingsHolder` for the
current policy of a vendor each time it computes a schedule, so that a reload changes what
happens next without a restart.
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from .errors import ConfigError
from .lifecycle import Policy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> timedelta:
    """``200ms``, ``10m``, ``6h``, ``7d``, or a plain number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like '200ms', '10m', '6h', '7d' or seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
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


def _resolve_secret(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} (named by 'env:{name}') is not set")
        return os.environ[name]
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class PollingSettings(BaseModel):
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
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


class PollingOverride(BaseModel):
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


class VendorSettings(BaseModel):
    model_config = _STRICT

    adapter: str = "reference"
    base_url: str
    merchant_id: str = Field(min_length=1, max_length=64)
    secret: Secret
    sign_type: Literal["HMAC-SHA256", "MD5"] = "HMAC-SHA256"
    timeout: Duration = timedelta(seconds=5)
    concurrency: int = Field(32, ge=1, le=10_000)
    polling: PollingOverride = PollingOverride()
    status_map: dict[str, VendorOutcomeName] = Field(
        default_factory=lambda: dict(DEFAULT_STATUS_MAP)
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


class DatabaseSettings(BaseModel):
    model_config = _STRICT

    url: str = "sqlite:///orderwatch.db"


class WorkerSettings(BaseModel):
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


class ApiSettings(BaseModel):
    model_config = _STRICT

    listen: str = "127.0.0.1:8080"
    tokens: list[ApiToken] = Field(default_factory=list)


NotifyEvent = Literal["order.shipped", "order.succeeded", "order.failed", "order.reopened"]


def _default_events() -> list[NotifyEvent]:
    return ["order.shipped", "order.succeeded", "order.failed"]


class NotifySettings(BaseModel):
    model_config = _STRICT

    webhook_url: str | None = None
    secret: Secret | None = None
    initial_interval: Duration = timedelta(seconds=30)
    max_interval: Duration = timedelta(hours=1)
    max_age: Duration = timedelta(days=3)
    events: list[NotifyEvent] = Field(default_factory=_default_events)


class ConfigCenterSettings(BaseModel):
    model_config = _STRICT

    server: str = "127.0.0.1:8848"
    namespace: str = ""
    group: str = "DEFAULT_GROUP"
    data_id: str = "orderwatch.toml"
    username: str | None = None
    password: Secret | None = None


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
    version so the hot path pays a dict lookup, not a merge.
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
            self._settings = settings
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


# ---------------------------------------------------------------- loading with sources


@dataclass
class Loaded:
    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> default|file|env
    path: Path | None = None


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


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = _merge({}, value)
        else:
            base[key] = value
    return base


def _explain(error: ValidationError, sources: Mapping[str, str]) -> list[str]:
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        # pydantic puts the field before its validator tag; drop the tags it adds for unions
        loc = re.sub(r"\.(?:str|int|float|timedelta|list\[[^\]]*\]|literal\[[^\]]*\])", "", loc)
        source = sources.get(loc)
        if source is None:
            source = next(
                (s for k, s in sources.items() if k.startswith(loc + ".") or loc.startswith(k)),
                "default",
            )
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{loc or '(root)'} ({source}): {msg}")
    return lines


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if env.get("ORDERWATCH_CONFIG"):
        return Path(env["ORDERWATCH_CONFIG"])
    candidate = Path("orderwatch.toml")
    return candidate if candidate.exists() else None


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Loaded:
    """Read defaults < file < environment (< ``overrides``, for tests and the demo).

    Raises :class:`~orderwatch.errors.ConfigError` naming every bad key and its source.
    """
    env = os.environ if env is None else env
    file_path = Path(path) if path is not None else default_config_path(env)
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if file_path is not None:
        try:
            with file_path.open("rb") as fh:
                file_data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([f"config file {file_path} does not exist"]) from None
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
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, sources)) from None
    return Loaded(settings, sources, file_path)


def effective_lines(loaded: Loaded) -> list[tuple[str, str, str]]:
    """``(dotted.key, value, source)`` for every key in force, secrets masked."""
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
    if isinstance(value, str):
        return value
    return repr(value) if not isinstance(value, list) else "[" + ", ".join(map(str, value)) + "]"
