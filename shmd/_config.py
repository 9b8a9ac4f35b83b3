"""Daemon configuration: defaults < TOML file < environment < command line.

The TOML file holds the same keys as the flags (``spin_us = 50``) plus the
per-model tables ``[cache.workload] ttl_ms = 100, enabled = true,
quantum = 0.0`` (and the adaptive TTL's ``adaptive``, ``ttl_min_ms``,
``ttl_max_ms``, ``tolerance``), the channel priorities ``[priorities]
security = 3`` and the version policy ``[model_versions] workload = 2`` (a
pinned version; ``"latest"``, the default, serves the highest version in the
repository and moves on SIGHUP). Environment variables are ``SHMD_`` plus the
key in upper case (``SHMD_SPIN_US=20``, ``SHMD_CHANNELS=a,b``,
``SHMD_PRIORITIES=security=3,scheduler=0``).
"""

from __future__ import annotations

import argparse
import grp
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kernel_abi import MAX_CHANNELS, RESERVED_NAMES

from ._errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the segment name rule (ringbuf)
MIN_RING_CAPACITY, MAX_RING_CAPACITY = 2, 1 << 24  # what ringbuf accepts
# A bucket's ways at least; at the maximum a model's cache holds 180-372 MiB (its full keys)
MIN_CACHE_CAPACITY, MAX_CACHE_CAPACITY = 4, 1 << 20

DEFAULT_CHANNELS = ("scheduler", "memory", "security", "healing")
HTTP_CHANNEL = "http"
MAX_HTTP_WORKERS = 64


def http_channels(workers: int) -> tuple[str, ...]:
    """The channel of each HTTP worker: ``http``, then ``http1``, ``http2``, ..."""
    return (HTTP_CHANNEL, *(f"{HTTP_CHANNEL}{i}" for i in range(1, workers)))


def default_http_workers() -> int:
    """One shim process per two CPUs beyond the daemon's, at least two (one on a single CPU), at most 8.

    A shim spends more CPU per prediction than the daemon (``bench http``: 65-225 µs against
    3-40 µs), so the HTTP throughput is the shims'. Before the shim's fast path, two shims on
    2 vCPUs were ahead of one in every case (c=16 and c=64 throughput 1.2-1.3x the bare aiohttp
    endpoint against 0.6-0.7x). With it, one and two are within this host's run-to-run noise
    (bench/results/http.json, Dec 1st: c=16 1.96x vs 1.84x, c=64 1.91x vs 2.31x, c=1 p50 1.70x
    vs 1.33x the bare endpoint); two stay the default, for ~60 MB more resident.
    """
    cpus = os.cpu_count() or 1
    return 1 if cpus < 2 else max(2, min(8, (cpus - 1) // 2))


#: ``models.BACKENDS``, named here so reading a config never imports the models (a test pins them equal).
BACKENDS = ("litert", "compiled", "tf")
DEFAULT_TTL_MS = {"workload": 100.0, "threat": 500.0, "failure": 1000.0, "memory": 50.0}
# Channel priorities (higher drains first; see _loop._share_room). The security monitor's and the
# memory manager's answers matter more than the scheduler's; a channel not named gets DEFAULT_PRIORITY.
DEFAULT_PRIORITIES = {"security": 3, "memory": 2, "healing": 2}
DEFAULT_PRIORITY = 1
MAX_PRIORITY = 7
ADAPTIVE_SPAN = 10.0  # adaptive TTL bounds default to [ttl_ms / 10, ttl_ms * 10]


@dataclass(frozen=True)
class CacheConfig:
    ttl_ms: float
    enabled: bool = True
    quantum: float = 0.0  # features rounded to this step before hashing; 0 = exact
    adaptive: bool | None = None  # tune the TTL within [ttl_min_ms, ttl_max_ms]; None: the global adaptive_ttl
    ttl_min_ms: float = 0.0  # 0: ttl_ms / ADAPTIVE_SPAN
    ttl_max_ms: float = 0.0  # 0: ttl_ms * ADAPTIVE_SPAN
    tolerance: float = 0.01  # a recomputed answer within this of the expired one counts as stable

    def bounds_ms(self) -> tuple[float, float]:
        """The adaptive TTL's range (ms)."""
        return (self.ttl_min_ms or self.ttl_ms / ADAPTIVE_SPAN, self.ttl_max_ms or self.ttl_ms * ADAPTIVE_SPAN)


def _default_cache() -> dict[str, CacheConfig]:
    return {name: CacheConfig(ttl) for name, ttl in DEFAULT_TTL_MS.items()}


@dataclass(frozen=True)
class Config:
    prefix: str = "shmd"
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    host: str = "127.0.0.1"
    port: int = 9005
    http: bool = True
    http_workers: int = 0  # HTTP shim processes sharing the port (SO_REUSEPORT); 0 = default_http_workers()
    spin_us: float = 100.0  # covers a Python client's turnaround, so a steady caller needs no wake-up
    # A sleeping loop wakes at least this often even if no client wakes it: the
    # safety net behind the futex handshake (a wake-up it rescues is counted).
    sleep_timeout_ms: float = 100.0
    models_dir: str | None = None
    backend: str = "compiled"  # measured fastest (docs/MODELS.md); litert and tf are the references
    keep_segments: bool = False
    sq_capacity: int = 1024
    cq_capacity: int = 1024
    max_batch: int = 512  # records drained per pass, over all channels
    cache_capacity: int = 1 << 14  # entries per model, 180-372 B each (full key, answer, way, doorkeeper): 2.8-5.8 MiB
    max_queue_ms: float = 0.0  # shed (OVERLOADED) requests queued longer; 0 = never
    admin_token: str | None = None  # bearer token guarding metrics reset and cache clear
    log_format: str = "kv"  # kv | json
    group: str | None = None  # segments 0660 with this group (callers in it may attach); else 0600
    replace_untrusted: bool = False  # unlink and re-create objects of another owner or a wider mode
    adaptive_ttl: bool = False  # tune every model's TTL (off: docs/MODELS.md); [cache.X] adaptive overrides
    cache: dict[str, CacheConfig] = field(default_factory=_default_cache)
    priorities: dict[str, int] = field(default_factory=dict)  # channel -> priority, over DEFAULT_PRIORITIES
    model_versions: dict[str, int] = field(default_factory=dict)  # pinned versions; a model absent = latest

    def priority(self, channel: str) -> int:
        """The drain priority of ``channel`` (higher first): configured, else the default table's, else 1."""
        return self.priorities.get(channel, DEFAULT_PRIORITIES.get(channel, DEFAULT_PRIORITY))

    def adaptive(self, model: str) -> bool:
        """Whether ``model``'s TTL adapts (its own ``adaptive`` setting, else ``adaptive_ttl``)."""
        own = self.cache[model].adaptive if model in self.cache else None
        return self.adaptive_ttl if own is None else own

    @property
    def workers(self) -> int:
        """HTTP shim processes to run (``http_workers``, or the machine's default)."""
        return self.http_workers or default_http_workers()

    def validate(self) -> Config:
        """This config, or ConfigError naming the first invalid setting ("what: name=value")."""
        for what, name in [("prefix", self.prefix), *(("channel", ch) for ch in self.channels)]:
            if not _NAME.match(name):
                raise ConfigError(f"{what} must be 1-64 of [A-Za-z0-9_-]: {what}={name!r}")
        for key in ("sq_capacity", "cq_capacity"):
            _power_of_two(key, getattr(self, key), MIN_RING_CAPACITY, MAX_RING_CAPACITY)
        _power_of_two("cache_capacity", self.cache_capacity, MIN_CACHE_CAPACITY, MAX_CACHE_CAPACITY)
        if not 0 <= self.max_queue_ms <= 3_600_000:
            raise ConfigError(f"max_queue_ms must be in [0, 3600000]: max_queue_ms={self.max_queue_ms}")
        if not 0 <= self.spin_us <= 100_000:
            raise ConfigError(f"spin_us must be in [0, 100000]: spin_us={self.spin_us}")
        if not 1 <= self.sleep_timeout_ms <= 60_000:
            raise ConfigError(
                f"sleep_timeout_ms must be in [1, 60000]: sleep_timeout_ms={self.sleep_timeout_ms}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}: backend={self.backend!r}")
        if not 1 <= self.max_batch <= 65536:
            raise ConfigError(f"max_batch must be in [1, 65536]: max_batch={self.max_batch}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in [1, 65535]: port={self.port}")
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ConfigError(f"channels must be non-empty and distinct: channels={','.join(self.channels)}")
        if not 0 <= self.http_workers <= MAX_HTTP_WORKERS:
            raise ConfigError(f"http_workers must be in [0, {MAX_HTTP_WORKERS}] (0: default): "
                              f"http_workers={self.http_workers}")  # fmt: skip
        if self.http:
            taken = [name for name in http_channels(self.workers) if name in self.channels]
            if taken:
                raise ConfigError(f"channel name {taken[0]!r} is reserved for the HTTP shim")
        for name in self.channels:
            if name in RESERVED_NAMES:
                raise ConfigError(f"channel name {name!r} is reserved for the daemon's own segment")
        if len(self.channels) + (self.workers if self.http else 0) > MAX_CHANNELS:
            raise ConfigError(
                f"at most {MAX_CHANNELS} channels (the HTTP shim's included): channels={len(self.channels)}"
            )
        if self.log_format not in ("kv", "json"):
            raise ConfigError(f"log_format must be kv or json: log_format={self.log_format!r}")
        if self.group is not None:
            try:
                grp.getgrnam(self.group)
            except KeyError:
                raise ConfigError(f"group does not exist: group={self.group!r}; create it or fix the name") from None
        unknown = set(self.model_versions) - set(DEFAULT_TTL_MS)
        if unknown:
            raise ConfigError(f"model_versions has unknown models: {', '.join(sorted(unknown))}")
        unknown = set(self.cache) - set(DEFAULT_TTL_MS)
        if unknown:
            raise ConfigError(f"cache has unknown models: {', '.join(sorted(unknown))}")
        for name, cc in self.cache.items():
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (cc.ttl_ms, cc.quantum))
            if not (numbers and 0 <= cc.ttl_ms < math.inf and 0 <= cc.quantum < math.inf):
                raise ConfigError(f"cache.{name}: ttl_ms and quantum must be finite numbers >= 0: {cc}")
            lo, hi = cc.bounds_ms()
            nums = (cc.ttl_min_ms, cc.ttl_max_ms, cc.tolerance)
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf for v in nums):
                raise ConfigError(f"cache.{name}: ttl_min_ms, ttl_max_ms and tolerance must be finite numbers >= 0: "
                                  f"ttl_min_ms={cc.ttl_min_ms} ttl_max_ms={cc.ttl_max_ms} tolerance={cc.tolerance}")
            if cc.adaptive is not None and not isinstance(cc.adaptive, bool):
                raise ConfigError(f"cache.{name}: adaptive must be true or false: adaptive={cc.adaptive!r}")
            if self.adaptive(name) and cc.enabled and not 0 < lo <= cc.ttl_ms <= hi:
                raise ConfigError(f"cache.{name}: an adaptive TTL needs 0 < ttl_min_ms <= ttl_ms <= ttl_max_ms: "
                                  f"ttl_min_ms={lo} ttl_ms={cc.ttl_ms} ttl_max_ms={hi}")
        served = set(self.channels) | (set(http_channels(self.workers)) if self.http else set())
        for name, prio in self.priorities.items():
            if name not in served:
                raise ConfigError(f"priorities names a channel that is not served: channel={name!r}; "
                                  f"served: {', '.join(sorted(served))}")
            if isinstance(prio, bool) or not isinstance(prio, int) or not 0 <= prio <= MAX_PRIORITY:
                raise ConfigError(f"priority must be an integer in [0, {MAX_PRIORITY}]: priorities.{name}={prio!r}")
        return self


def _power_of_two(key: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi or value & (value - 1):
        raise ConfigError(f"{key} must be a power of two in [{lo}, {hi}]: {key}={value}")


_SCALARS = {f.name: f for f in fields(Config) if f.name not in ("cache", "priorities", "model_versions")}
_TABLES = ("priorities",)  # settings that are {name: value} tables; from env and flags as "a=1,b=2"


def _priorities(value: Any, source: str) -> dict[str, int]:
    """``{"security": 3}`` (TOML) or ``"security=3,scheduler=0"`` (environment, flags)."""
    if isinstance(value, dict):
        return dict(value)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: priorities must be a table of channel = integer: priorities={value!r}")
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, eq, number = item.partition("=")
        try:
            if not eq:
                raise ValueError(item)
            out[name.strip()] = int(number)
        except ValueError:
            raise ConfigError(f"{source}: priorities must be channel=integer pairs: priorities={value!r}") from None
    return out


MAX_MODEL_VERSION = 0xFFFF  # the response slot's u16


def _policy(source: str, model: str, value: Any) -> int | None:
    """A ``model_versions`` entry: None for ``"latest"``, else a version in [1, 65535]."""
    if value == "latest":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_MODEL_VERSION:
        return value
    raise ConfigError(f"{source}: model_versions.{model} must be \"latest\" or a version in [1, "
                      f"{MAX_MODEL_VERSION}]: model_versions.{model}={value!r}")  # fmt: skip


def _coerce(key: str, value: Any) -> Any:
    kind = Config.__dataclass_fields__[key].type
    try:
        if key == "channels":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(s.strip() for s in items if s.strip())
        if "bool" in kind:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if "int" in kind:
            return int(value)
        if "float" in kind:
            return float(value)
        return None if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} has an invalid value: {key}={value!r} (expected {kind})") from None


def _merge(cfg: Config, values: dict[str, Any], source: str) -> Config:
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key == "cache":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: cache must be a table of models")
            merged = dict(cfg.cache)
            for model, table in value.items():
                base = merged.get(model, CacheConfig(DEFAULT_TTL_MS.get(model, 0.0)))
                try:
                    merged[model] = replace(base, **table)
                except TypeError as err:
                    raise ConfigError(f"{source}: cache.{model}: {err}") from None
            updates["cache"] = merged
        elif key == "priorities":
            updates["priorities"] = {**cfg.priorities, **_priorities(value, source)}
        elif key == "model_versions":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: model_versions must be a table of models")
            pinned = dict(cfg.model_versions)
            for model, policy in value.items():
                version = _policy(source, model, policy)
                if version is None:
                    pinned.pop(model, None)
                else:
                    pinned[model] = version
            updates["model_versions"] = pinned
        elif key in _SCALARS:
            updates[key] = _coerce(key, value)
        else:
            raise ConfigError(f"{source}: unknown setting {key!r}")
    return replace(cfg, **updates)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shmd serve", description="Run the shmd daemon in the foreground.")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--prefix", help="namespace of every shared-memory segment (default shmd)")
    p.add_argument("--channels", help="comma-separated channel names (default scheduler,memory,security,healing)")
    p.add_argument("--host", help="HTTP shim address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP shim port (default 9005)")
    p.add_argument("--no-http", dest="http", action="store_false", default=None, help="do not start the HTTP shim")
    p.add_argument("--http-workers", dest="http_workers", type=int,
                   help="HTTP shim processes sharing the port, each with its own channel "
                   "(default: one per two CPUs beyond the daemon's, at least 2; 1 on a single CPU)")  # fmt: skip
    p.add_argument("--spin-us", dest="spin_us", type=float, help="idle spin before sleeping, µs (default 100)")
    p.add_argument("--sleep-timeout-ms", dest="sleep_timeout_ms", type=float,
                   help="longest idle sleep before the loop looks again, ms (default 100)")  # fmt: skip
    p.add_argument("--models-dir", dest="models_dir", help="model artifacts (default: the shipped ones)")
    p.add_argument("--backend", choices=BACKENDS, help="model runtime (default compiled)")
    p.add_argument("--keep-segments", dest="keep_segments", action="store_true", default=None,
                   help="leave the channels in /dev/shm on exit")  # fmt: skip
    p.add_argument("--group", help="make segments 0660 with this group, so its members may attach "
                   "(default: 0600, the daemon's user only)")  # fmt: skip
    p.add_argument("--replace-untrusted", dest="replace_untrusted", action="store_true", default=None,
                   help="unlink and re-create segments another user made (default: refuse)")  # fmt: skip
    p.add_argument("--max-queue-ms", dest="max_queue_ms", type=float,
                   help="answer OVERLOADED to requests queued longer than this (default off)")  # fmt: skip
    defaults = ",".join(f"{k}={v}" for k, v in DEFAULT_PRIORITIES.items())
    p.add_argument("--priorities", help="channel priorities, higher drains first: security=3,scheduler=0 "
                   f"(default {defaults}, others {DEFAULT_PRIORITY})")  # fmt: skip
    p.add_argument("--adaptive-ttl", dest="adaptive_ttl", action="store_true", default=None,
                   help="tune each model's cache TTL from the drift of recomputed answers (default off)")  # fmt: skip
    return p


def load(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """The effective configuration for ``shmd serve`` with these arguments."""
    args = parser().parse_args(argv)
    cfg = Config()
    if args.config is not None:
        try:
            data = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read config file {args.config}: {err}") from None
        cfg = _merge(cfg, data, str(args.config))
    env = os.environ if environ is None else environ
    from_env = {k: env[f"SHMD_{k.upper()}"] for k in (*_SCALARS, *_TABLES) if f"SHMD_{k.upper()}" in env}
    cfg = _merge(cfg, from_env, "environment")
    from_flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return _merge(cfg, from_flags, "command line").validate()
