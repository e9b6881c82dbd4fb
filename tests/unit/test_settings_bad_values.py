"""Config values that pass `config check` and break later, or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orderwatch.errors import ConfigError
from orderwatch.settings import load_settings
from orderwatch.store.sql import engine_url

ACME = {"acme": {"base_url": "http://acme.test", "merchant_id": "M1", "secret": "s"}}


def problems(**overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={}, overrides={"vendors": ACME, **overrides})
    return info.value.problems


def test_an_unknown_adapter_in_the_file_stops_start_up(tmp_path: Path) -> None:
    # From Nacos this is refused (config_center.layered); from orderwatch.toml it passes
    # `config check` and every order of the vendor then fails inside the worker, unseen.
    path = tmp_path / "orderwatch.toml"
    path.write_text(
        '[vendors.acme]\nadapter = "referense"\nbase_url = "http://acme.test"\n'
        'merchant_id = "M1"\nsecret = "s"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert any(
        p.startswith("vendors.acme.adapter") and "referense" in p for p in info.value.problems
    )


@pytest.mark.parametrize("url", ["nonsense", "mongodb://db.example/orders", "sqlite:/x.db"])
def test_a_database_url_that_cannot_work_stops_start_up(url: str) -> None:
    # Today: `config check` says ok, then every command dies with a SQLAlchemy traceback
    # (exit 1, not the 2 of a config error).
    assert any(p.startswith("database.url") for p in problems(database={"url": url}))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("polling", "max_polls", True),
        ("polling", "factor", True),
        ("polling", "jitter", False),
        ("worker", "concurrency", True),
    ],
)
def test_a_boolean_is_not_a_number(section: str, key: str, value: bool) -> None:
    # `max_polls = true` is taken as 1: every order fails after its first query.
    assert any(p.startswith(f"{section}.{key}") for p in problems(**{section: {key: value}}))


def test_two_api_tokens_with_the_same_value_are_refused() -> None:
    # The second entry's role is silently ignored (TokenTable takes the first match).
    tokens = [
        {"name": "ops", "token": "same-token-0123", "role": "operator"},
        {"name": "cs", "token": "same-token-0123", "role": "viewer"},
    ]
    assert any(p.startswith("api.tokens") for p in problems(api={"tokens": tokens}))


def test_an_api_token_that_no_request_can_present_is_refused() -> None:
    # A secret file read through env: often ends in "\n"; the Authorization header is
    # stripped before comparing, so this token can never match: every call gets 401.
    tokens = [{"name": "platform", "token": "env:TOK", "role": "platform"}]
    with pytest.raises(ConfigError) as info:
        load_settings(
            None,
            env={"TOK": "tok-0123456789\n"},
            overrides={"vendors": ACME, "api": {"tokens": tokens}},
        )
    assert any(p.startswith("api.tokens[0].token") for p in info.value.problems)


def test_booleans_still_set_boolean_keys() -> None:
    vendors = {"acme": {**ACME["acme"], "sign_keep_empty": True}}
    settings = load_settings(None, env={}, overrides={"vendors": vendors}).settings
    assert settings.vendors["acme"].sign_keep_empty is True


@pytest.mark.parametrize(
    "url",
    [
        "postgres://postgres@127.0.0.1:5432/test",  # engine_url maps it to postgresql+psycopg
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "sqlite+pysqlite:///x.db",
        "mysql+pymysql://root@127.0.0.1:3306/test",
        "mariadb://root@127.0.0.1:3306/test",
        "mariadb+pymysql://root@127.0.0.1:3306/test",
    ],
)
def test_a_database_url_the_store_takes_is_accepted(url: str) -> None:
    loaded = load_settings(None, env={"ORDERWATCH_DATABASE__URL": url})
    assert loaded.settings.database.url == url
    # ...and the store speaks one of its three dialects to it (its SQL is chosen by them)
    assert engine_url(url).get_backend_name() in {"sqlite", "postgresql", "mysql"}
