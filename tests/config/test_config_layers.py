"""The config layers without a network: precedence of every source, the error messages,
masking, content formats, what a reload may change, and where the cache lives."""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from config_helpers import Write

from orderwatch.config_center import (
    cache_path,
    content_format,
    layered,
    parse_content,
    parse_properties,
    server_urls,
)
from orderwatch.errors import ConfigError
from orderwatch.settings import (
    RESTART_ONLY,
    ConfigCenterSettings,
    Loaded,
    RemoteState,
    SettingsHolder,
    changed_keys,
    effective_lines,
    format_duration,
    keep_restart_only,
    load_settings,
    parse_duration,
    with_layer,
)

ACME = """
[vendors.acme]
base_url = "http://acme.test"
merchant_id = "M0001"
secret = "acme-file-secret"
"""
CC = ConfigCenterSettings()
NACOS = "nacos data id orderwatch.toml (group DEFAULT_GROUP, namespace public)"


def nacos_layer(loaded: Loaded, content: str, *, data_id: str = "orderwatch.toml") -> Loaded:
    cc = ConfigCenterSettings(data_id=data_id)
    return layered(loaded, cc, content, remote=RemoteState())


def lines(loaded: Loaded) -> dict[str, tuple[str, str]]:
    return {key: (value, source) for key, value, source in effective_lines(loaded)}


def problem(exc: pytest.ExceptionInfo[ConfigError], key: str) -> str:
    found = [p for p in exc.value.problems if p.startswith(f"{key} (")]
    assert len(found) == 1, exc.value.problems
    return found[0]


# ---------------------------------------------------------------- precedence


def test_each_source_overrides_the_one_below(write: Write) -> None:
    path = write(
        "[polling]\nmax_polls = 10\nfactor = 3.0\njitter = 0.2\n"
        + ACME
        + "[vendors.acme.polling]\ninitial_delay = '1m'\n"
    )
    env = {"ORDERWATCH_POLLING__MAX_POLLS": "20", "ORDERWATCH_POLLING__FACTOR": "4"}
    loaded = load_settings(path, env=env)
    merged = nacos_layer(
        loaded, "[polling]\nmax_polls = 30\n[vendors.acme.polling]\nmax_polls = 3\n"
    )

    shown = lines(merged)
    assert shown["polling.max_polls"] == ("30", "nacos")  # nacos > env > file
    assert shown["polling.factor"] == ("4.0", "env")  # env > file
    assert shown["polling.jitter"] == ("0.2", "file")  # file > default
    assert shown["polling.initial_delay"] == ("10m", "default")
    assert shown["vendors.acme.polling.initial_delay"] == ("1m", "file")
    assert shown["vendors.acme.polling.max_polls"] == ("3", "nacos")
    assert shown["vendors.acme.base_url"] == ("http://acme.test", "file")
    assert {source for _, source in shown.values()} == {"default", "file", "env", "nacos"}
    p = merged.settings.policy("acme")
    assert (p.max_polls, p.factor, p.jitter, p.initial_delay) == (3, 4.0, 0.2, 60.0)
    assert merged.settings.policy(None).max_polls == 30


def test_a_new_layer_replaces_the_last_one_and_never_stacks_on_it(write: Write) -> None:
    loaded = load_settings(write("[polling]\nmax_polls = 10\n"), env={})
    first = nacos_layer(loaded, "[polling]\nmax_polls = 30\nfactor = 3.0\n")
    second = nacos_layer(first, "[polling]\nmax_polls = 40\n")

    assert lines(second)["polling.max_polls"] == ("40", "nacos")
    assert lines(second)["polling.factor"] == ("2.0", "default")  # not 3.0 from the first
    assert lines(nacos_layer(second, ""))["polling.max_polls"] == ("10", "file")


def test_nacos_can_add_a_vendor_and_its_secret_is_masked(write: Write) -> None:
    loaded = load_settings(write(""), env={"OW_BETA": "beta-secret-from-env"})
    merged = nacos_layer(
        loaded,
        "[vendors.beta]\nbase_url = 'https://beta.test'\nmerchant_id = 'M2'\n"
        "secret = 'env:OW_BETA'\n",
    )

    assert lines(merged)["vendors.beta.secret"] == ("***", "nacos")
    assert merged.settings.vendors["beta"].secret.get_secret_value() == "beta-secret-from-env"
    printed = "\n".join(f"{k} = {v}  ({s})" for k, v, s in effective_lines(merged))
    assert "beta-secret-from-env" not in printed


def test_every_secret_is_masked_in_config_show(write: Write) -> None:
    path = write(
        ACME
        + "[notify]\nsecret = 'whsec_abc'\n"
        + "[[api.tokens]]\nname = 'p'\ntoken = 'tok-123'\nrole = 'platform'\n"
        + "[config_center]\nusername = 'nacos'\npassword = 'pw-123'\n"
        + "access_key = 'AK'\nsecret_key = 'sk-123'\n"
    )
    shown = lines(load_settings(path, env={}))

    for key in (
        "vendors.acme.secret",
        "notify.secret",
        "api.tokens[0].token",
        "config_center.password",
        "config_center.secret_key",
    ):
        assert shown[key] == ("***", "file"), key
    assert shown["config_center.username"] == ("nacos", "file")
    text = repr(shown)
    for secret in ("acme-file-secret", "whsec_abc", "tok-123", "pw-123", "sk-123"):
        assert secret not in text


def test_config_center_cannot_be_moved_by_the_config_center(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "[config_center]\ndata_id = 'other.toml'\n")

    text = problem(exc, "config_center")
    assert NACOS in text
    assert "orderwatch.toml or ORDERWATCH_CONFIG_CENTER__" in text


def test_the_config_center_table_can_come_from_the_environment() -> None:
    env = {
        "ORDERWATCH_CONFIG_CENTER__SERVER": "nacos.internal:8848",
        "ORDERWATCH_CONFIG_CENTER__DATA_ID": "orderwatch.properties",
        "ORDERWATCH_CONFIG_CENTER__PULL_TIMEOUT": "10s",
    }
    loaded = load_settings(None, env=env)

    cc = loaded.settings.config_center
    assert cc is not None
    assert (cc.server, cc.pull_timeout, content_format(cc)) == (
        "nacos.internal:8848",
        timedelta(seconds=10),
        "properties",
    )
    assert lines(loaded)["config_center.server"] == ("nacos.internal:8848", "env")


# ---------------------------------------------------------------- errors name key, source, rule


def test_a_bad_value_from_nacos_names_the_key_the_data_id_and_the_rule(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "[polling]\nmax_polls = 0\ninitial_delay = 'soon'\n")

    assert problem(exc, "polling.max_polls") == (
        f"polling.max_polls ({NACOS}): Input should be greater than or equal to 1"
    )
    assert problem(exc, "polling.initial_delay") == (
        f"polling.initial_delay ({NACOS}): expected a duration like '200ms', '10m', '6h', "
        "'7d' or seconds, got 'soon'"
    )


def test_an_unknown_key_lists_the_keys_allowed_there(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "[polling]\nmax_pols = 3\n[pollings]\n")

    assert problem(exc, "polling.max_pols").startswith(
        f"polling.max_pols ({NACOS}): unknown key; allowed here: initial_delay, "
    )
    assert "max_polls" in problem(exc, "polling.max_pols")
    assert problem(exc, "pollings") == (
        f"pollings ({NACOS}): unknown key; allowed here: database, polling, worker, vendors, "
        "api, notify, config_center, log"
    )


def test_env_errors_name_the_variable(write: Write) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(""), env={"ORDERWATCH_POLLING__JITTER": "2"})

    assert problem(exc, "polling.jitter") == (
        "polling.jitter (env ORDERWATCH_POLLING__JITTER): Input should be less than 1"
    )


def test_file_errors_name_the_file(write: Write) -> None:
    path = write("[polling]\non_place_unknown = 'retry'\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})

    assert problem(exc, "polling.on_place_unknown") == (
        f"polling.on_place_unknown (file {path}): Input should be 'reconcile' or 'fail'"
    )


def test_a_missing_key_names_where_its_table_came_from(write: Write) -> None:
    path = write("[vendors.acme]\nbase_url = 'http://a.test'\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={"ORDERWATCH_VENDORS__ACME__MERCHANT_ID": "M1"})

    assert problem(exc, "vendors.acme.secret") == (
        f"vendors.acme.secret (file {path}, env): required key is missing"
    )


def test_a_nested_key_from_one_source_names_it(write: Write) -> None:
    loaded = load_settings(write(ACME), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "[vendors.acme.polling]\nfactor = 0.5\n")

    assert problem(exc, "vendors.acme.polling.factor") == (
        f"vendors.acme.polling.factor ({NACOS}): Input should be greater than or equal to 1"
    )


def test_a_section_given_as_a_value_says_it_must_be_a_table(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "polling = 5\n")

    assert problem(exc, "polling") == f"polling ({NACOS}): must be a table ([polling]), got int"


def test_an_unknown_adapter_from_nacos_is_rejected_by_name(write: Write) -> None:
    loaded = load_settings(write(ACME), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "[vendors.acme]\nadapter = 'acme-v9'\n")

    text = problem(exc, "vendors.acme.adapter")
    assert NACOS in text
    assert "no adapter named 'acme-v9'" in text


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("server = 'nacos host'", "config_center.server"),
        ("context_path = 'nacos'", "config_center.context_path"),
        ("data_id = 'a/b.toml'", "config_center.data_id"),
        ("namespace = 'ns 1'", "config_center.namespace"),
        ("pull_timeout = '1ms'", "config_center.pull_timeout"),
        ("format = 'json'", "config_center.format"),
        ("api = 'v3'", "config_center.api"),
        ("username = 'nacos'", "config_center"),
        ("access_key = 'AK'", "config_center"),
    ],
)
def test_config_center_errors(write: Write, table: str, message: str) -> None:
    path = write(f"[config_center]\n{table}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})

    text = problem(exc, message)
    assert f"(file {path})" in text


def test_username_without_password_says_to_give_both(write: Write) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write("[config_center]\nusername = 'nacos'\n"), env={})

    assert problem(exc, "config_center").endswith(
        "username is set but password is not: give both or neither"
    )


@pytest.mark.parametrize("value", ['"1000000000d"', "inf", "1e30"])
def test_an_absurd_duration_is_an_error_not_a_crash(write: Write, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(f"[polling]\ndeadline = {value}\n"), env={})

    assert "is too long: at most 36500d" in problem(exc, "polling.deadline")


def test_env_secrets_come_from_the_mapping_given_first(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OW_S", "from-process")
    text = "[vendors.acme]\nbase_url = 'http://a.test'\nmerchant_id = 'M'\nsecret = 'env:OW_S'\n"
    path = write(text)

    given = load_settings(path, env={"OW_S": "from-mapping"})
    process = load_settings(path, env={})

    assert given.settings.vendors["acme"].secret.get_secret_value() == "from-mapping"
    assert process.settings.vendors["acme"].secret.get_secret_value() == "from-process"
    relayered = nacos_layer(given, "[vendors.acme]\ntimeout = '2s'\n")
    assert relayered.settings.vendors["acme"].secret.get_secret_value() == "from-mapping"


def test_events_may_be_a_comma_separated_string() -> None:
    env = {"ORDERWATCH_NOTIFY__EVENTS": "order.failed, order.reopened"}
    assert load_settings(None, env=env).settings.notify.events == [
        "order.failed",
        "order.reopened",
    ]


def test_durations_round_trip() -> None:
    for text in ("200ms", "10m", "6h", "7d", "90s"):
        assert format_duration(parse_duration(text)) == text
    assert parse_duration(30) == timedelta(seconds=30)


# ---------------------------------------------------------------- content formats


def test_properties_are_dotted_keys() -> None:
    text = (
        "# orderwatch on Nacos\n"
        "! also a comment\n"
        "polling.initial_delay = 5m\n"
        "polling.max_polls: 12\n"
        "vendors.acme.base_url http://acme.test\n"
        "vendors.acme.merchant_id=M\\u0030\\\n"
        "    01\n"
        "notify.events = order.failed,order.shipped\n"
    )
    assert parse_properties(text) == {
        "polling": {"initial_delay": "5m", "max_polls": "12"},
        "vendors": {"acme": {"base_url": "http://acme.test", "merchant_id": "M001"}},
        "notify": {"events": "order.failed,order.shipped"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.b = 1\na.b = 2\n", "line 2: a.b is set twice (first on line 1)"),
        ("a = 1\na.b = 2\n", "line 2: a.b is under a, which holds a value"),
        ("a.b = 1\na = 2\n", "line 2: a is a table, not a value"),
        ("a..b = 1\n", "line 1: 'a..b' is not a dotted key"),
        ("a = \\u12\n", "line 1: bad unicode escape \\u12"),
    ],
)
def test_properties_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_properties(text, label="nacos data id x.properties")

    assert exc.value.problems == [f"nacos data id x.properties, {message}"]


def test_properties_values_are_converted_by_the_model(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    merged = nacos_layer(
        loaded, "polling.max_polls=12\npolling.factor=1.5\n", data_id="ow.properties"
    )

    assert (merged.settings.polling.max_polls, merged.settings.polling.factor) == (12, 1.5)


def test_yaml_by_extension(write: Write) -> None:
    pytest.importorskip("yaml")
    loaded = load_settings(write(""), env={})
    merged = nacos_layer(loaded, "polling:\n  initial_delay: 2m\n  max_polls: 7\n", data_id="a.yml")

    assert merged.settings.policy().initial_delay == 120.0
    assert lines(merged)["polling.max_polls"] == ("7", "nacos")
    with pytest.raises(ConfigError) as exc:
        parse_content("- a\n- b\n", fmt="yaml", label="L")
    assert exc.value.problems == ["L: must be a mapping of sections, got list"]
    with pytest.raises(ConfigError) as exc:
        parse_content("a: [\n", fmt="yaml", label="L")
    assert exc.value.problems[0].startswith("L: not valid YAML:")
    assert parse_content("", fmt="yaml", label="L") == {}


def test_yaml_without_pyyaml_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_yaml(name: str, package: str | None = None) -> Any:
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_yaml)
    with pytest.raises(ConfigError) as exc:
        parse_content("a: 1\n", fmt="yaml", label="L")

    assert exc.value.problems == ["L: is YAML, but PyYAML is not installed (pip install pyyaml)"]


def test_bad_toml_from_nacos_names_the_data_id(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    with pytest.raises(ConfigError) as exc:
        nacos_layer(loaded, "[polling\n")

    assert exc.value.problems[0].startswith(f"{NACOS}: not valid TOML:")


@pytest.mark.parametrize(
    ("data_id", "fmt", "expected"),
    [
        ("orderwatch.toml", "auto", "toml"),
        ("orderwatch", "auto", "toml"),
        ("orderwatch.properties", "auto", "properties"),
        ("orderwatch.yaml", "auto", "yaml"),
        ("orderwatch.YML", "auto", "yaml"),
        ("orderwatch.conf", "properties", "properties"),
    ],
)
def test_the_format_follows_the_extension(data_id: str, fmt: Any, expected: str) -> None:
    assert content_format(ConfigCenterSettings(data_id=data_id, format=fmt)) == expected


def test_a_bom_is_ignored() -> None:
    assert parse_content("\ufeff[polling]\nmax_polls = 3\n", fmt="toml", label="L") == {
        "polling": {"max_polls": 3}
    }


# ---------------------------------------------------------------- what a reload may change


def test_restart_only_keys_keep_their_running_value(write: Write) -> None:
    loaded = load_settings(write("[worker]\nbatch_size = 10\n"), env={})
    new = nacos_layer(
        loaded,
        "[database]\nurl = 'postgresql://db/ow'\n[worker]\nbatch_size = 50\n"
        "[api]\nlisten = '0.0.0.0:9000'\n[log]\nlevel = 'debug'\n"
        "[polling]\nmax_polls = 5\n",
    )

    settings, sources, held = keep_restart_only(
        loaded.settings, loaded.sources, new.settings, new.sources
    )

    assert held == ["api.listen", "database.url", "log.level", "worker.batch_size"]
    assert settings.database == loaded.settings.database
    assert settings.worker.batch_size == 10
    assert settings.api.listen == "127.0.0.1:8080"
    assert settings.log.level == "info"
    assert settings.polling.max_polls == 5  # hot keys apply
    assert sources["worker.batch_size"] == "file"
    assert sources["polling.max_polls"] == "nacos"
    assert "api.listen" not in sources
    assert set(RESTART_ONLY) >= {"database", "worker", "api.listen"}


def test_nothing_held_back_when_restart_only_keys_are_unchanged(write: Write) -> None:
    loaded = load_settings(write(ACME), env={})
    new = nacos_layer(loaded, "[polling]\nmax_polls = 5\n[vendors.acme]\ntimeout = '9s'\n")

    settings, _, held = keep_restart_only(
        loaded.settings, loaded.sources, new.settings, new.sources
    )

    assert held == []
    assert settings is new.settings
    assert changed_keys(loaded.settings, settings) == [
        "polling.max_polls",
        "vendors.acme.timeout",
    ]


def test_changed_keys_see_secrets_change_without_showing_them(write: Write) -> None:
    loaded = load_settings(write(ACME), env={})
    new = nacos_layer(loaded, "[vendors.acme]\nsecret = 'rotated'\n")

    assert changed_keys(loaded.settings, new.settings) == ["vendors.acme.secret"]


def test_replace_keeps_the_settings_object_of_an_unchanged_vendor(write: Write) -> None:
    two = ACME + "[vendors.beta]\nbase_url = 'http://b.test'\nmerchant_id = 'M'\nsecret = 's'\n"
    loaded = load_settings(write(two), env={})
    holder = SettingsHolder(loaded.settings, loaded.sources)
    acme, beta = holder.current.vendors["acme"], holder.current.vendors["beta"]

    holder.replace(nacos_layer(loaded, "[vendors.beta]\ntimeout = '9s'\n").settings)

    assert holder.current.vendors["acme"] is acme  # the registry keeps acme's adapter
    assert holder.current.vendors["beta"] is not beta
    assert holder.current.vendors["beta"].timeout == timedelta(seconds=9)
    assert holder.version == 1


def test_with_layer_is_also_usable_for_other_sources(write: Write) -> None:
    loaded = load_settings(write(""), env={})
    merged = with_layer(loaded, {"polling": {"max_polls": 4}}, source="nacos", label="X")

    assert lines(merged)["polling.max_polls"] == ("4", "nacos")
    with pytest.raises(ConfigError) as exc:
        with_layer(loaded, {"polling": {"max_polls": -1}}, label="X")
    assert problem(exc, "polling.max_polls").startswith("polling.max_polls (X): ")


# ---------------------------------------------------------------- cache location, servers


def test_the_cache_lives_beside_the_sqlite_file(tmp_path: Path) -> None:
    cc = ConfigCenterSettings(namespace="prod", group="OW", data_id="ow.toml")
    assert cache_path(cc, f"sqlite:///{tmp_path}/data/ow.db") == (
        tmp_path / "data" / ".orderwatch-nacos-cache" / "prod" / "OW" / "ow.toml"
    )
    assert cache_path(CC, "sqlite:///ow.db") == Path(
        ".orderwatch-nacos-cache/public/DEFAULT_GROUP/orderwatch.toml"
    )


def test_other_databases_use_the_cache_home(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    expected = tmp_path / "c" / "orderwatch" / "nacos" / "public" / "DEFAULT_GROUP"
    for url in ("postgresql://u@db/ow", "mysql://u@db/ow", "sqlite:///:memory:", "nonsense"):
        assert cache_path(CC, url, env=env) == expected / "orderwatch.toml", url


def test_cache_dir_wins(tmp_path: Path) -> None:
    cc = ConfigCenterSettings(cache_dir=str(tmp_path / "here"))
    assert cache_path(cc, "sqlite:///ow.db") == (
        tmp_path / "here" / "public" / "DEFAULT_GROUP" / "orderwatch.toml"
    )


def test_server_addresses() -> None:
    cc = ConfigCenterSettings(
        server="10.0.0.1, nacos.test:8849,https://nacos.example.com, http://[::1]:8848/",
        context_path="/nacos/",
    )
    assert server_urls(cc) == [
        "http://10.0.0.1:8848/nacos",
        "http://nacos.test:8849/nacos",
        "https://nacos.example.com/nacos",
        "http://[::1]:8848/nacos",
    ]
    assert server_urls(ConfigCenterSettings(server="[::1]", context_path="")) == [
        "http://[::1]:8848"
    ]
