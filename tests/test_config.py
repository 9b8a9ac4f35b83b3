"""`shmd serve` configuration: defaults < TOML < environment < flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shmd import ConfigError
from shmd._config import DEFAULT_CHANNELS, load


def test_defaults_follow_the_public_contract() -> None:
    cfg = load([], environ={})
    expected = ("shmd", DEFAULT_CHANNELS, "127.0.0.1", 9005, True)
    assert (cfg.prefix, cfg.channels, cfg.host, cfg.port, cfg.http) == expected
    assert cfg.spin_us <= 100 and cfg.backend == "compiled"
    assert {k: v.ttl_ms for k, v in cfg.cache.items()} == {
        "workload": 100.0, "threat": 500.0, "failure": 1000.0, "memory": 50.0,
    }  # fmt: skip


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "shmd.toml"
    toml.write_text('prefix = "fromfile"\nspin_us = 10\nport = 9100\n[cache.threat]\nttl_ms = 250\nenabled = false\n')
    cfg = load(["--config", str(toml), "--port", "9200"], environ={"SHMD_SPIN_US": "20", "SHMD_CHANNELS": "x,y"})
    assert cfg.prefix == "fromfile"  # file only
    assert cfg.spin_us == 20  # environment beats file
    assert cfg.port == 9200  # flag beats file
    assert cfg.channels == ("x", "y")
    assert cfg.cache["threat"].ttl_ms == 250 and not cfg.cache["threat"].enabled
    assert cfg.cache["workload"].ttl_ms == 100  # untouched models keep the seed's TTL
    assert load([], environ={"SHMD_SLEEP_TIMEOUT_MS": "2500"}).sleep_timeout_ms == 2500


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--spin-us", "-1"], {}, r"^spin_us must be in \[0, 100000\]: spin_us=-1.0$"),
        ([], {"SHMD_PORT": "http"}, r"^port has an invalid value: port='http'"),
        (["--channels", "a,a"], {}, r"^channels must be non-empty and distinct: channels=a,a$"),
        (["--channels", "http"], {}, r"^channel name 'http' is reserved for the HTTP shim$"),
        ([], {"SHMD_KEEP_SEGMENTS": "maybe"}, r"^keep_segments has an invalid value"),
        ([], {"SHMD_SLEEP_TIMEOUT_MS": "0"}, r"^sleep_timeout_ms must be in \[1, 60000\]: sleep_timeout_ms=0.0$"),
        (["--channels", "a,stats"], {}, r"^channel name 'stats' is reserved for the daemon's own segment$"),
        (["--channels", ",".join(f"c{i}" for i in range(128))], {}, r"^at most 128 channels"),
        ([], {"SHMD_SQ_CAPACITY": "1000"}, r"^sq_capacity must be a power of two in \[2, 16777216\]: sq_capacity=1000"),
        ([], {"SHMD_CQ_CAPACITY": "0"}, r"^cq_capacity must be a power of two in \[2, 16777216\]: cq_capacity=0$"),
        ([], {"SHMD_CACHE_CAPACITY": "3"}, r"^cache_capacity must be a power of two in \[4, 1048576\]: cache_capa"),
        ([], {"SHMD_MAX_QUEUE_MS": "nan"}, r"^max_queue_ms must be in \[0, 3600000\]: max_queue_ms=nan$"),
        (["--channels", "ok,no/slash"], {}, r"^channel must be 1-64 of \[A-Za-z0-9_-\]: channel='no/slash'$"),
        (["--prefix", "a.b"], {}, r"^prefix must be 1-64 of \[A-Za-z0-9_-\]: prefix='a\.b'$"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(argv, environ=environ)


def test_unknown_settings_in_the_file_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("spin_ms = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown setting 'spin_ms'$"):
        load(["--config", str(toml)], environ={})
    toml.write_text("[cache.workload]\nttl_ms = nan\n")
    with pytest.raises(ConfigError, match=r"^cache\.workload: ttl_ms and quantum must be finite numbers >= 0: "):
        load(["--config", str(toml)], environ={})
    toml.write_text("[cache.weather]\nttl_ms = 3\n")
    with pytest.raises(ConfigError, match=r"^cache has unknown models: weather$"):
        load(["--config", str(toml)], environ={})
