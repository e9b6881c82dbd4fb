"""The Nacos client, start-up and the watcher against a fake Nacos over real HTTP.

Start, change, invalid change, outage (server stopped), recovery; the cached copy at start;
login and token expiry; namespaces; properties; the v2 API; several servers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from config_helpers import PULL, Base, events, until
from nacos_fake import FakeNacos, md5

from orderwatch.config_center import (
    ConfigWatcher,
    NacosClient,
    NacosDenied,
    NacosUnavailable,
    load_initial,
    watch_config,
)
from orderwatch.errors import ConfigError
from orderwatch.settings import ConfigCenterSettings, Loaded, SettingsHolder, effective_lines

V1 = "[polling]\ninitial_delay = '2m'\nmax_polls = 12\n"
V2 = "[polling]\ninitial_delay = '3m'\nmax_polls = 12\n"
BAD = "[polling]\ninitial_delay = 'later'\n"
NACOS = "nacos data id orderwatch.toml (group DEFAULT_GROUP, namespace public)"


def cached(loaded: Loaded) -> Path:
    assert loaded.remote is not None
    assert loaded.remote.cache_path is not None
    return loaded.remote.cache_path


def source(loaded: Loaded, key: str) -> tuple[str, str]:
    return next((v, s) for k, v, s in effective_lines(loaded) if k == key)


# ---------------------------------------------------------------- start


async def test_start_reads_the_data_id_and_caches_it_beside_the_database(
    nacos: FakeNacos, base: Base, tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)

    loaded = await load_initial(base(nacos))

    assert loaded.settings.policy().initial_delay == 120.0
    assert source(loaded, "polling.initial_delay") == ("2m", "nacos")
    assert source(loaded, "config_center.server") == (nacos.address, "file")
    path = tmp_path / ".orderwatch-nacos-cache" / "public" / "DEFAULT_GROUP" / "orderwatch.toml"
    assert cached(loaded) == path
    assert path.read_text(encoding="utf-8") == V1
    assert loaded.remote is not None
    assert (loaded.remote.origin, loaded.remote.applied_md5) == ("server", md5(V1))
    [ev] = events(logs, "config_center_loaded")
    assert (ev["md5"], ev["keys"], ev["source"]) == (md5(V1), 2, NACOS)


async def test_start_without_the_data_id_runs_on_file_and_env(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    loaded = await load_initial(base(nacos, file_text="[polling]\nmax_polls = 9\n"))

    assert source(loaded, "polling.max_polls") == ("9", "file")
    assert loaded.remote is not None
    assert (loaded.remote.origin, loaded.remote.reached) == ("none", True)
    assert events(logs, "config_center_data_id_missing")


async def test_unreachable_at_start_uses_the_cached_copy_and_says_so(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    first = await load_initial(base(nacos))
    await nacos.stop()

    loaded = await load_initial(base(nacos))

    assert loaded.settings.policy().initial_delay == 120.0
    assert source(loaded, "polling.initial_delay") == ("2m", "nacos")
    assert loaded.remote is not None
    assert (loaded.remote.origin, loaded.remote.reached) == ("cache", False)
    [warning] = events(logs, "config_center_using_cache")
    assert warning["log_level"] == "warning"
    assert warning["cache"] == str(cached(first))
    assert warning["reason"].startswith(f"cannot reach Nacos: GET http://{nacos.address}/")
    assert "cached copy is in force" in warning["note"]


async def test_unreachable_at_start_without_a_cache_stops_start_up(
    nacos: FakeNacos, base: Base
) -> None:
    loaded = base(nacos)
    await nacos.stop()

    with pytest.raises(ConfigError) as exc:
        await load_initial(loaded)

    [text] = exc.value.problems
    assert text.startswith(f"config_center ({NACOS}): cannot reach Nacos: GET ")
    assert "no cached copy at " in text
    assert "config_center.required = false" in text


async def test_not_required_starts_on_file_and_env_and_applies_nacos_when_it_answers(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    loaded = base(nacos, required=False)
    await nacos.stop()
    loaded = await load_initial(loaded)
    assert loaded.settings.policy().initial_delay == 600.0
    assert events(logs, "config_center_unavailable_no_cache")

    holder = SettingsHolder(loaded.settings, loaded.sources)
    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await nacos.publish(V1)
        await nacos.start()
        await until(lambda: watcher.applied_updates == 1, what="the first content")

    assert holder.policy(None).initial_delay == 120.0
    assert events(logs, "config_center_reachable")


async def test_invalid_content_at_start_falls_back_to_the_cache(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    await load_initial(base(nacos))
    await nacos.publish(BAD)

    loaded = await load_initial(base(nacos))

    assert loaded.settings.policy().initial_delay == 120.0
    assert loaded.remote is not None
    assert (loaded.remote.origin, loaded.remote.seen_md5) == ("cache", md5(BAD))
    [error] = events(logs, "config_center_content_invalid")
    assert error["problems"][0].startswith(f"polling.initial_delay ({NACOS}): expected a dur")
    assert events(logs, "config_center_using_cache")[0]["reason"] == "its content is invalid"


async def test_invalid_content_at_start_without_a_cache_is_a_config_error(
    nacos: FakeNacos, base: Base
) -> None:
    await nacos.publish(BAD)

    with pytest.raises(ConfigError) as exc:
        await load_initial(base(nacos))

    assert exc.value.problems[0].startswith(f"polling.initial_delay ({NACOS}): ")


# ---------------------------------------------------------------- change, invalid change


async def test_the_listener_sends_the_md5_handshake(nacos: FakeNacos, base: Base) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded):
        await until(lambda: nacos.calls["listen"] >= 1, what="a long poll")

    probe = unquote_plus(nacos.listen_bodies[0])
    assert probe == f"orderwatch.toml\x02DEFAULT_GROUP\x02{md5(V1)}\x01"
    assert nacos.listen_timeouts[0] == str(int(PULL * 1000))


async def test_a_change_applies_without_restart(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await until(lambda: nacos.calls["listen"] >= 1, what="a long poll")
        started = time.monotonic()
        await nacos.publish(V2)
        await until(lambda: watcher.applied_updates == 1, what="the change")
        took = time.monotonic() - started

    assert took < PULL  # the held poll answered at once; no waiting for its timeout
    assert holder.policy(None).initial_delay == 180.0
    assert holder.sources["polling.initial_delay"] == "nacos"
    assert cached(loaded).read_text(encoding="utf-8") == V2
    [ev] = events(logs, "config_reloaded")
    assert (ev["changed"], ev["md5"], ev["version"]) == (
        ["polling.initial_delay"],
        md5(V2),
        1,
    )


async def test_an_invalid_change_is_rejected_and_the_last_good_config_stays(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await until(lambda: nacos.calls["listen"] >= 1, what="a long poll")
        await nacos.publish(BAD)
        await until(lambda: watcher.rejected_updates == 1, what="the rejection")
        polls = nacos.calls["listen"]
        await asyncio.sleep(PULL * 2.5)
        # it listens on with the rejected MD5: held polls, not a loop of instant answers
        assert nacos.calls["listen"] - polls <= 4
        assert nacos.calls["get"] == 2  # start + the bad update, fetched once
        await nacos.publish(V2)
        await until(lambda: watcher.applied_updates == 1, what="the good change after")

    assert watcher.rejected_updates == 1
    [rejected] = events(logs, "config_update_rejected")
    assert rejected["log_level"] == "error"
    assert rejected["problems"] == [
        f"polling.initial_delay ({NACOS}): expected a duration like '200ms', '10m', '6h', "
        "'7d' or seconds, got 'later'"
    ]
    assert rejected["note"] == "the last good config stays in force"
    assert holder.policy(None).initial_delay == 180.0
    assert cached(loaded).read_text(encoding="utf-8") == V2  # a rejected copy is never cached


async def test_restart_only_keys_are_logged_and_held_back(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)
    url = holder.current.database.url
    update = V1 + "factor = 3.0\n[worker]\nlease = '5m'\n[database]\nurl = 'sqlite:///x.db'\n"

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await nacos.publish(update)
        await until(lambda: watcher.applied_updates == 1, what="the change")

    assert holder.current.database.url == url
    assert holder.current.worker.lease.total_seconds() == 60
    assert holder.policy(None).factor == 3.0
    assert watcher.restart_required == ["database.url", "worker.lease"]
    [ev] = events(logs, "config_restart_required")
    assert ev["keys"] == ["database.url", "worker.lease"]
    assert events(logs, "config_reloaded")[0]["changed"] == ["polling.factor"]


async def test_a_deleted_data_id_leaves_file_and_env(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos, file_text="[polling]\nmax_polls = 9\n"))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await nacos.delete()
        await until(lambda: watcher.applied_updates == 1, what="the deletion")

    assert holder.policy(None).max_polls == 9
    assert holder.policy(None).initial_delay == 600.0
    assert not cached(loaded).exists()
    assert events(logs, "config_center_data_id_missing")


# ---------------------------------------------------------------- outage and recovery


async def test_an_outage_keeps_the_config_and_recovery_picks_up_what_changed(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await until(lambda: nacos.calls["listen"] >= 1, what="a long poll")
        await nacos.stop()
        await until(lambda: len(events(logs, "config_center_unreachable")) >= 3, what="retries")
        assert not watcher.reachable
        assert watcher.last_error is not None
        assert holder.policy(None).initial_delay == 120.0  # the config in force stays
        await nacos.publish(V2)  # changed while orderwatch could not see it
        await nacos.start()
        await until(lambda: watcher.applied_updates == 1, what="the change after recovery")
        assert watcher.reachable

    assert holder.policy(None).initial_delay == 180.0
    retries = events(logs, "config_center_unreachable")
    assert [r["attempt"] for r in retries[:3]] == [1, 2, 3]
    assert all(0.04 <= r["retry_in"] <= 0.24 for r in retries)  # 50ms doubling, capped 200ms
    assert retries[-1]["note"] == "the config in force stays"
    [back] = events(logs, "config_center_reachable")
    assert back["after_seconds"] >= 0


async def test_http_5xx_is_an_outage_too(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        nacos.fail_with(503)
        await until(lambda: bool(events(logs, "config_center_unreachable")), what="a retry")
        assert "HTTP 503" in (watcher.last_error or "")
        nacos.fail_with(None)
        await nacos.publish(V2)
        await until(lambda: watcher.applied_updates == 1, what="the change")


async def test_started_from_the_cache_the_watcher_catches_up(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    await load_initial(base(nacos))
    await nacos.stop()
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        assert watcher.origin == "cache"
        await nacos.publish(V2)
        await nacos.start()
        await until(lambda: watcher.applied_updates == 1, what="the server's content")
        assert watcher.origin == "server"

    assert holder.policy(None).initial_delay == 180.0


async def test_started_from_an_up_to_date_cache_nothing_is_reapplied(
    nacos: FakeNacos, base: Base, logs: list[dict[str, Any]]
) -> None:
    await nacos.publish(V1)
    await load_initial(base(nacos))
    await nacos.stop()
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await nacos.start()
        await until(lambda: watcher.reachable, what="the server")
        await asyncio.sleep(PULL / 2)

    assert watcher.applied_updates == 0
    assert nacos.calls["get"] == 1  # the MD5 matched: no fetch


async def test_stop_returns_at_once_during_a_held_poll(nacos: FakeNacos, base: Base) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos, pull_timeout="30s"))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    started = time.monotonic()
    async with watch_config(holder, loaded):
        await until(lambda: nacos.calls["listen"] >= 1, what="a long poll")

    assert time.monotonic() - started < 2.0


# ---------------------------------------------------------------- auth, namespaces, formats


async def test_login_token_on_every_call_and_a_fresh_login_after_expiry(
    make_nacos: Any, base: Base
) -> None:
    nacos: FakeNacos = await make_nacos(users={"ow": "pw"})
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos, username="ow", password="pw"))
    assert loaded.settings.policy().initial_delay == 120.0
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await until(lambda: nacos.calls["listen"] >= 1, what="a long poll")
        nacos.expire_tokens()
        await nacos.publish(V2)
        await until(lambda: watcher.applied_updates == 1, what="the change")

    assert nacos.calls["login"] >= 3  # start, watcher, after expiry


async def test_wrong_credentials_are_named(make_nacos: Any, base: Base) -> None:
    nacos: FakeNacos = await make_nacos(users={"ow": "pw"})
    await nacos.publish(V1)
    cc = base(nacos, username="ow", password="wrong").settings.config_center
    assert cc is not None
    client = NacosClient(cc)
    try:
        with pytest.raises(NacosDenied, match=r"login as 'ow' refused \(HTTP 403\)"):
            await client.get_config()
    finally:
        await client.close()

    with pytest.raises(ConfigError, match="login as 'ow' refused"):
        await load_initial(base(nacos, username="ow", password="wrong"))


async def test_no_token_when_the_server_wants_one(make_nacos: Any, base: Base) -> None:
    nacos: FakeNacos = await make_nacos(users={"ow": "pw"})
    cc = base(nacos).settings.config_center
    assert cc is not None
    client = NacosClient(cc)
    try:
        with pytest.raises(NacosDenied, match=r"check config_center\.username/password"):
            await client.get_config()
    finally:
        await client.close()


async def test_a_namespace_is_the_tenant(nacos: FakeNacos, base: Base, tmp_path: Path) -> None:
    await nacos.publish(V1, tenant="prod-ns")
    await nacos.publish(V2)  # the public namespace must not be read
    loaded = await load_initial(base(nacos, namespace="prod-ns"))
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await nacos.publish(V2, tenant="prod-ns")
        await until(lambda: watcher.applied_updates == 1, what="the change")

    assert loaded.settings.policy().initial_delay == 120.0
    assert holder.policy(None).initial_delay == 180.0
    assert unquote_plus(nacos.listen_bodies[0]).endswith(f"\x02{md5(V1)}\x02prod-ns\x01")
    assert cached(loaded).parts[-3:] == ("prod-ns", "DEFAULT_GROUP", "orderwatch.toml")


async def test_a_properties_data_id(nacos: FakeNacos, base: Base) -> None:
    await nacos.publish("polling.initial_delay=2m\npolling.max_polls=4\n", data_id="ow.properties")

    loaded = await load_initial(base(nacos, data_id="ow.properties", group="OW"))
    assert loaded.settings.config_center is not None
    assert loaded.settings.config_center.group == "OW"
    assert loaded.remote is not None
    assert loaded.remote.origin == "none"  # published in DEFAULT_GROUP, asked for OW

    await nacos.publish("polling.initial_delay=2m\npolling.max_polls=4\n", "ow.properties", "OW")
    loaded = await load_initial(base(nacos, data_id="ow.properties", group="OW"))
    assert source(loaded, "polling.max_polls") == ("4", "nacos")


async def test_the_v2_api_reads_and_polls_for_changes(nacos: FakeNacos, base: Base) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos, api="v2", pull_timeout="100ms"))
    assert loaded.settings.policy().initial_delay == 120.0
    holder = SettingsHolder(loaded.settings, loaded.sources)

    async with watch_config(holder, loaded) as watcher:
        assert watcher is not None
        await nacos.publish(V2)
        await until(lambda: watcher.applied_updates == 1, what="the change")
        await nacos.delete()
        await until(lambda: watcher.applied_updates == 2, what="the deletion")

    assert nacos.calls["get"] == 0
    assert nacos.calls["listen"] == 0
    assert holder.policy(None).initial_delay == 600.0


async def test_a_dead_server_in_the_list_is_skipped(nacos: FakeNacos, base: Base) -> None:
    dead = FakeNacos()
    await dead.start()
    await dead.stop()  # a port that refuses connections
    await nacos.publish(V1)
    cc = ConfigCenterSettings(server=f"{dead.address},{nacos.address}", timeout="1s")
    client = NacosClient(cc)
    try:
        with pytest.raises(NacosUnavailable):
            await client.get_config()
        assert await client.get_config() == V1
        assert client.base_url == f"http://{nacos.address}/nacos"
    finally:
        await client.close()


async def test_watcher_apply_can_be_driven_directly(nacos: FakeNacos, base: Base) -> None:
    await nacos.publish(V1)
    loaded = await load_initial(base(nacos))
    holder = SettingsHolder(loaded.settings, loaded.sources)
    watcher = ConfigWatcher(holder, loaded)
    try:
        assert watcher.apply(V1) is False  # already in force
        assert watcher.apply(BAD) is False
        assert watcher.apply(V2) is True
        assert (watcher.applied_updates, watcher.rejected_updates) == (1, 1)
    finally:
        await watcher.close()
