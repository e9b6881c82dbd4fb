"""Settings (DESIGN §8): sources and their precedence, durations, secrets, clear errors.

Every test passes ``env`` explicitly and runs in an empty folder, so neither the developer's
environment nor a stray ``orderwatch.toml`` changes the result.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orderwatch.errors import ConfigError
from orderwatch.lifecycle import Policy
from orderwatch.settings import (
    Loaded,
    Settings,
    SettingsHolder,
    effective_lines,
    load_settings,
    parse_duration,
)

ACME = """
[vendors.acme]
base_url = "http://acme.test/"
merchant_id = "M0001"
secret = "env:OW_TEST_ACME_SECRET"
"""
BETA = """
[vendors.beta]
base_url = "https://beta.test"
merchant_id = "M0002"
secret = "beta-inline-secret"
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OW_TEST_ACME_SECRET", "acme-s3cret-value")


@pytest.fixture
def write(tmp_path: Path) -> Any:
    def write(text: str) -> Path:
        path = tmp_path / "orderwatch.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return excinfo.value.problems


def line_for(excinfo: pytest.ExceptionInfo[ConfigError], key: str, source: str) -> str:
    """The one problem line about ``key``, checking it names ``source`` (``file``, ``env``).

    Lines read ``dotted.key (SOURCE[ detail]): what is wrong``; the detail (the file path,
    the variable name) may vary, the key and the source may not.
    """
    lines = [p for p in problems(excinfo) if p.startswith(f"{key} (")]
    assert len(lines) == 1, problems(excinfo)
    assert lines[0].startswith((f"{key} ({source})", f"{key} ({source} ")), lines[0]
    assert lines[0] in str(excinfo.value)
    return lines[0]


# ---------------------------------------------------------------- precedence


def test_defaults_are_the_engine_defaults() -> None:
    loaded = load_settings(None, env={})

    assert loaded.path is None
    assert loaded.settings.policy() == Policy()
    assert Settings().policy() == Policy()


def test_file_overrides_defaults_and_env_overrides_file(write: Any) -> None:
    path = write('[polling]\nmax_polls = 12\ninitial_delay = "2m"\n')

    from_file = load_settings(path, env={})
    assert from_file.settings.policy().max_polls == 12
    assert from_file.sources["polling.max_polls"] == "file"

    both = load_settings(path, env={"ORDERWATCH_POLLING__MAX_POLLS": "20"})
    assert both.settings.policy().max_polls == 20
    assert both.sources["polling.max_polls"] == "env"
    assert both.settings.policy().initial_delay == 120, "untouched file keys stay"
    assert both.sources["polling.initial_delay"] == "file"

    only_env = load_settings(None, env={"ORDERWATCH_POLLING__MAX_POLLS": "20"})
    assert only_env.settings.policy().max_polls == 20


def test_config_path_from_env_and_from_the_working_folder(write: Any) -> None:
    path = write("[polling]\nmax_polls = 12\n")

    assert (
        load_settings(None, env={"ORDERWATCH_CONFIG": str(path)}).settings.polling.max_polls == 12
    )
    assert load_settings(None, env={}).path == Path("orderwatch.toml")


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_a_file_that_is_not_toml_is_a_config_error(write: Any) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write("[polling\nmax_polls = 1"), env={})


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("200ms", 0.2),
        ("10m", 600),
        ("6h", 21600),
        ("7d", 604800),
        ("45s", 45),
        ("1.5h", 5400),
        (" 10 m ", 600),
        ("30", 30),
        (30, 30),
        (2.5, 2.5),
        (0, 0),
        (timedelta(minutes=3), 180),
    ],
)
def test_parse_duration_accepts(value: Any, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "value", ["10M", "1h30m", "-5m", "5 minutes", "1e3", "", "m", None, True, -1, [10]]
)
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(value)


def test_durations_in_the_file(write: Any) -> None:
    path = write(
        '[polling]\ninitial_delay = "1.5h"\ninitial_interval = 30\n'
        'max_interval = "200ms"\ndeadline = "2d"\n'
    )
    policy = load_settings(path, env={}).settings.policy()

    assert (policy.initial_delay, policy.initial_interval) == (5400, 30)
    assert (policy.max_interval, policy.deadline) == (0.2, 172800)


def test_a_bad_duration_names_the_key_the_source_and_the_accepted_forms(write: Any) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write('[polling]\ndeadline = "a week"\n'), env={})

    line = line_for(excinfo, "polling.deadline", "file")
    assert "'7d'" in line
    assert "a week" in line


@pytest.mark.parametrize("key", ["initial_interval", "max_interval", "deadline"])
def test_zero_durations_where_they_make_no_sense_are_refused(key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, env={f"ORDERWATCH_POLLING__{key.upper()}": "0s"})

    assert "must be longer than 0s" in line_for(excinfo, f"polling.{key}", "env")


@pytest.mark.parametrize("toml_value", ['"1000000000d"', "inf", "nan", "1e300"])
def test_an_absurd_duration_is_a_config_error(write: Any, toml_value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write(f"[polling]\ndeadline = {toml_value}\n"), env={})

    line_for(excinfo, "polling.deadline", "file")


# ---------------------------------------------------------------- secrets


def test_env_secret_is_read_from_the_named_variable(write: Any) -> None:
    loaded = load_settings(write(ACME), env={})

    assert loaded.settings.vendors["acme"].secret.get_secret_value() == "acme-s3cret-value"
    assert "acme-s3cret-value" not in repr(loaded.settings)


def test_missing_env_secret_names_the_key_and_the_variable(
    write: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OW_TEST_ACME_SECRET")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write(ACME), env={})

    line = line_for(excinfo, "vendors.acme.secret", "file")
    assert "OW_TEST_ACME_SECRET" in line
    assert "not set" in line


def test_env_secret_is_read_from_the_env_mapping_given_to_load_settings(
    write: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OW_TEST_ACME_SECRET")
    loaded = load_settings(write(ACME), env={"OW_TEST_ACME_SECRET": "from-mapping"})

    assert loaded.settings.vendors["acme"].secret.get_secret_value() == "from-mapping"


# ---------------------------------------------------------------- errors name key and source


def test_unknown_key_in_the_file_names_the_dotted_key_and_file(write: Any) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write("[polling]\nmax_pols = 3\n"), env={})

    assert "unknown key" in line_for(excinfo, "polling.max_pols", "file")


def test_unknown_key_in_the_env_names_env() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, env={"ORDERWATCH_WORKER__BATCH": "10"})

    assert "unknown key" in line_for(excinfo, "worker.batch", "env")


def test_wrong_type_names_the_key_and_its_source(write: Any) -> None:
    path = write('[polling]\njitter = "lots"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={"ORDERWATCH_POLLING__MAX_POLLS": "many"})

    assert len(problems(excinfo)) == 2, "every bad key is reported at once"
    assert "integer" in line_for(excinfo, "polling.max_polls", "env")
    assert "number" in line_for(excinfo, "polling.jitter", "file")


def test_out_of_range_value_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, env={"ORDERWATCH_POLLING__JITTER": "1.5"})

    assert "less than 1" in line_for(excinfo, "polling.jitter", "env")


def test_wrong_literal_lists_the_choices(write: Any) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write('[polling]\non_place_unknown = "retry"\n'), env={})

    line = line_for(excinfo, "polling.on_place_unknown", "file")
    assert "'reconcile'" in line
    assert "'fail'" in line


def test_a_vendor_missing_a_required_key_names_it(write: Any) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write('[vendors.acme]\nmerchant_id = "M1"\nsecret = "s"\n'), env={})

    line = line_for(excinfo, "vendors.acme.base_url", "file")
    assert line.endswith("required key is missing")


# ---------------------------------------------------------------- per-vendor policy


def test_vendor_polling_override_applies_to_that_vendor_only(write: Any) -> None:
    path = write(
        "[polling]\nmax_polls = 12\n"
        + ACME
        + '[vendors.acme.polling]\nmax_polls = 7\ninitial_interval = "1m"\n'
        + BETA
    )
    settings = load_settings(path, env={}).settings

    acme = settings.policy("acme")
    assert (acme.max_polls, acme.initial_interval) == (7, 60)
    assert acme.deadline == Policy().deadline, "unset override keys are inherited"
    for other in ("beta", "not-configured", None):
        policy = settings.policy(other)
        assert (policy.max_polls, policy.initial_interval) == (12, 300), other


def test_vendor_polling_override_from_the_env(write: Any) -> None:
    loaded = load_settings(
        write(ACME + BETA), env={"ORDERWATCH_VENDORS__ACME__POLLING__ON_PLACE_UNKNOWN": "fail"}
    )

    assert loaded.settings.policy("acme").on_place_unknown == "fail"
    assert loaded.settings.policy("beta").on_place_unknown == "reconcile"
    assert loaded.sources["vendors.acme.polling.on_place_unknown"] == "env"


# ---------------------------------------------------------------- effective config


def _lines(loaded: Loaded) -> dict[str, tuple[str, str]]:
    return {key: (value, source) for key, value, source in effective_lines(loaded)}


def test_effective_lines_report_values_and_sources_and_mask_secrets(write: Any) -> None:
    path = write(
        '[polling]\ninitial_delay = "2m"\n'
        + ACME
        + BETA
        + '[[api.tokens]]\nname = "platform"\ntoken = "tok-123456"\nrole = "platform"\n'
    )
    loaded = load_settings(path, env={"ORDERWATCH_POLLING__MAX_POLLS": "20"})
    lines = _lines(loaded)

    assert lines["polling.max_polls"] == ("20", "env")
    assert lines["polling.initial_delay"] == ("2m", "file")
    assert lines["polling.deadline"] == ("7d", "default")
    assert lines["vendors.acme.base_url"] == ("http://acme.test", "file")
    assert lines["vendors.acme.secret"] == ("***", "file")
    assert lines["vendors.beta.secret"] == ("***", "file")
    assert lines["api.tokens[0].token"] == ("***", "file")
    assert lines["api.tokens[0].name"] == ("platform", "file")
    shown = repr(effective_lines(loaded))
    for secret in ("acme-s3cret-value", "beta-inline-secret", "tok-123456"):
        assert secret not in shown


# ---------------------------------------------------------------- hot reload seam


def test_settings_holder_replace_changes_the_policy_in_force(write: Any) -> None:
    first = load_settings(write(ACME + "[vendors.acme.polling]\nmax_polls = 7\n"), env={})
    holder = SettingsHolder(first.settings, first.sources)
    assert holder.policy("acme").max_polls == 7
    assert holder.policy(None).max_polls == 30
    assert holder.vendor_known("acme")
    assert not holder.vendor_known("beta")

    second = load_settings(write(ACME + "[vendors.acme.polling]\nmax_polls = 3\n" + BETA), env={})
    holder.replace(second.settings, second.sources)

    assert holder.version == 1
    assert holder.policy("acme").max_polls == 3, "no stale cached policy after a reload"
    assert holder.vendor_known("beta")
    assert holder.current.policy("acme").max_polls == 3
    assert holder.sources == second.sources
