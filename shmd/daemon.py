"""``shmd serve``: channels, models, the poll loop, and a clean stop.

The loop in Python is only orchestration; see ``_loop`` for what the
compiled code does. With ``--backend compiled`` the models run inside
``step`` and a pass never returns to Python; otherwise, per pass: one model
call per model with rows, then one ``step`` (finish this pass and wake the
clients that sleep, drain the next).
With nothing to do the drain spins for ``spin_us`` and ``step`` then sleeps
on every SQ's wake-up word (at most ``sleep_timeout_ms``) inside compiled
code.

On SIGTERM/SIGINT the pass in hand is published; requests still waiting in
an SQ stay there (a daemon restarted with ``--keep-segments`` on the same
prefix answers them; otherwise the segments are unlinked and callers time
out).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import numpy as np
from numba._dispatcher import compute_fingerprint

import ringbuf
from kernel_abi import MAX_CHANNELS, ModelId, Status

from . import _config, _lifecycle, _lock, _loop, _notify, _pass, _readiness
from . import _metrics as met
from . import _model_states as ms
from ._cache import ADAPT_WORDS, N_STATS
from ._errors import ShmdError
from ._http_child import HttpChild
from ._pass_layout import LOOP_HOUSEKEEPING_ASKED, PASS_FAULT, PASS_FAULT_COUNTDOWN, PASS_ROOM, PASS_SPIN_NS, Rings
from ._stale_code import purge_stale_numba_caches
from ._stats_segment import (
    ARGUMENT,
    CMD_CLEAR_CACHE,
    CMD_RESET_METRICS,
    COMMAND,
    DONE,
    SEQUENCE,
    StatsSegment,
    already_running,
)

EXIT_START_FAILED = 2  # ``shmd serve`` could not start (config, artifacts, segments, HTTP port): it says why
EXIT_LOOP_FAILED = 3  # the poll loop raised while serving: ``event=loop_failed`` says what; segments are removed
HOUSEKEEPING_NS = _loop.HOUSEKEEPING_NS  # heartbeat, gauges and control commands at most this often
CACHE_COUNT_NS = 1_000_000_000  # live cache entries are counted this often
STARTUP_SLEEP_NS = 1_000_000  # the loop's longest sleep until the start-up probe is through: ready soon after it
LOADING_SLEEP_NS = 1_000_000  # ... and while a version is being prepared: swapped in soon after it is


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def _process_age_ms() -> float:
    """Milliseconds since this process was exec'd (kernel clock ticks: 10 ms resolution)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rpartition(")")[2].split()[19])
    with open("/proc/uptime") as f:
        uptime_s = float(f.read().split()[0])
    return round((uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000, 1)


def _kv(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


def log(event: str, fmt: str = "kv", **fields: Any) -> None:
    """One structured event per line on stderr (``key=value``, quoted when needed, or JSON)."""
    if fmt == "json":
        line = json.dumps({"event": event, **fields})
    else:
        line = " ".join([f"event={event}", *(f"{k}={_kv(v)}" for k, v in fields.items())])
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _native_output_as_events(fmt: str) -> Iterator[None]:
    """Catch what native libraries print on fd 2 meanwhile (LiteRT's "INFO: Created ... delegate")
    and log each line as an ``event=native_log``, so stderr stays one event per line."""
    lines: list[str] = []
    try:
        with _lifecycle.captured_fd2() as lines:
            yield
    finally:
        for line in lines:
            log("native_log", fmt, line=line)


class Daemon:
    """Everything ``shmd serve`` owns, from start-up to a clean stop."""

    def __init__(self, cfg: _config.Config, *, probe: bool = False) -> None:
        """``probe``: ready only after a start-up probe (``main``); otherwise serving at once (in-process tests)."""
        self.cfg = cfg
        self.stopping = False
        self.pid = os.getpid()
        self.http: HttpChild | None = None  # set by main() when the shim runs
        self.notifier = _notify.Notifier()  # systemd's $NOTIFY_SOCKET, if any
        self.channels: list[ringbuf.Channel] = []
        self.names = list(cfg.channels) + (list(_config.http_channels(cfg.workers)) if cfg.http else [])
        # Without the shim the start-up probe needs a channel no caller can hold: this one, served
        # last, unlinked as soon as it exists and never listed in the stats segment (_readiness).
        own_channel = probe and not cfg.http and len(self.names) < MAX_CHANNELS
        self.probe_name = f"startup-probe-{secrets.token_hex(4)}" if own_channel else None
        self.served = self.names + ([self.probe_name] if self.probe_name else [])
        self.probed: _readiness.Outcome | None = None  # set by the probe's thread
        self.started = False  # start_serving ran: callers are served, metrics count, the fault point is armed
        self.on_started: Callable[[_readiness.Outcome], None] = lambda outcome: None  # main(): event=ready
        self.access = ringbuf.Access.for_group(cfg.group)  # mode and group of everything we create
        t0 = time.monotonic()
        pid = StatsSegment.serving_pid(cfg.prefix)  # refuse before the slow part; create() re-checks
        if pid:
            raise already_running(cfg.prefix, pid)
        with _native_output_as_events(cfg.log_format):
            self._load_models()
        self.phases_ms = {"models_ms": _ms_since(t0)}  # start-up's breakdown, logged with event=ready
        try:  # from the first segment on, a failure leaves nothing behind
            t1 = time.monotonic()
            self._make_stats()
            self._make_channels()
            self._beat_while_starting()
            self._make_buffers()
            self.phases_ms["segments_ms"] = _ms_since(t1)
            t1 = time.monotonic()
            # Load (or compile) the loop's code now, not on the first request; a
            # restarted daemon may find requests already waiting: keep their count.
            self.pending = self.step(0, 0, 0)
            self.phases_ms["loop_ms"] = _ms_since(t1)
            if not probe:
                self.start_serving(_readiness.Outcome("serving", "", 0, 0.0))
        except BaseException as err:
            self.close()
            if isinstance(err, ringbuf.SegmentNoSpace | OSError):
                raise ShmdError(f"cannot create the shared memory of prefix {cfg.prefix!r}: {err}") from err
            raise
        self.startup_s = time.monotonic() - t0

    # --- start-up ----------------------------------------------------------------

    def _load_models(self) -> None:
        """Every model at the version its policy names, validated and warmed up like a hot load."""
        import models

        self.runners: dict[int, Any] = {}
        self.versions = np.zeros(_loop.N_MODELS, np.uint16)
        for mid in ModelId:
            version = self._policy_version(mid)
            if version is None:
                pinned = self.cfg.model_versions.get(mid.name.lower())
                where = models.version_dir(self.cfg.models_dir, mid, pinned) if pinned else None
                raise models.ArtifactError(
                    f"model {mid.name.lower()} is pinned to version {pinned}, which is not in the repository: {where}"
                    if pinned else f"model has no version: {models.version_dir(self.cfg.models_dir, mid, 1).parent} "
                    "holds no <version>/manifest.json"
                )  # fmt: skip
            runner = _lifecycle.prepare(mid, version, backend=self.cfg.backend, models_dir=self.cfg.models_dir,
                                        max_batch=self.cfg.max_batch)  # fmt: skip
            self.runners[int(mid)] = runner
            self.versions[mid] = int(runner.version)
        self.n_features = {int(m): models.N_FEATURES[m] for m in ModelId}
        self.n_raw = {int(m): models.N_RAW_OUTPUTS[m] for m in ModelId}
        self._python_runners()

    def _python_runners(self) -> None:
        import models

        # Runners the pass cannot call itself (litert, tf): Python runs them between passes.
        self.python_runners = {m: r for m, r in self.runners.items() if not isinstance(r, models.CompiledRunner)}

    def _policy_version(self, mid: ModelId) -> int | None:
        """The version model ``mid`` should serve: its pinned one, else the latest on disk (None: not there)."""
        import models

        pinned = self.cfg.model_versions.get(mid.name.lower())
        on_disk = models.versions_on_disk(self.cfg.models_dir, mid)
        if pinned is not None:
            return pinned if pinned in on_disk else None
        return on_disk[-1] if on_disk else None

    def _make_stats(self) -> None:
        n_ch = len(self.served)
        spec = {
            "model": ((np.int64), (_loop.N_MODELS, met.N_MODEL_COUNTERS)),
            "hist": ((np.int64), (_loop.N_MODELS, 2, met.N_BUCKETS)),
            "summary": ((np.int64), (_loop.N_MODELS, 2, 4)),
            "batch_hist": ((np.int64), (_loop.N_MODELS, met.N_BATCH_BUCKETS)),
            "channel": ((np.int64), (n_ch, met.N_CHANNEL_COUNTERS)),
            "gauges": ((np.int64), (n_ch, 2)),  # queue depth, corrupt
            "cache_stats": ((np.int64), (_loop.N_MODELS, N_STATS)),
            "cache_ttl_ns": ((np.int64), (_loop.N_MODELS,)),  # the TTL now (adaptive: moves)
            "cache_adapt": ((np.float64), (_loop.N_MODELS, ADAPT_WORDS)),  # its bounds; ADAPT_MAX_NS 0: fixed
            "cache_entries": ((np.int64), (_loop.N_MODELS,)),
            "control": ((np.int64), (4,)),
            **ms.arrays(_loop.N_MODELS),
            "heartbeat": ((np.int64), (2,)),  # last housekeeping ns, passes
            "startup": ((np.int64), (2,)),  # 1 once the start-up probe is through; predictions it had answered
            "loop": ((np.int64), (_pass.N_LOOP_COUNTERS,)),  # _pass_layout.LOOP_*
        }
        meta = {
            "pid": os.getpid(),
            "prefix": self.cfg.prefix,
            "channels": self.names,
            "backend": self.cfg.backend,
            "models_dir": str(self.cfg.models_dir or ""),  # "" = the shipped repository
            "admin_token_set": self.cfg.admin_token is not None,
            "cache_capacity": self.cfg.cache_capacity,
        }
        self.stats = StatsSegment.create(
            self.cfg.prefix, spec, meta, self.access, replace_untrusted=self.cfg.replace_untrusted
        )
        a = self.stats.arrays
        self.metrics = met.MetricsArrays(a["model"], a["hist"], a["summary"], a["batch_hist"], a["channel"])
        self.cache = _pass.new_cache(self.cfg.cache_capacity)
        # The pass updates these in place: readers (and the clients' edge caches) see the TTL it tunes.
        self.cache.stats, self.cache.ttl_ns, self.cache.adapt = a["cache_stats"], a["cache_ttl_ns"], a["cache_adapt"]
        for mid in ModelId:
            name = mid.name.lower()
            cc = self.cfg.cache.get(name)
            if cc is not None and cc.enabled:
                self.cache.ttl_ns[mid] = int(cc.ttl_ms * 1e6)
                self.cache.quantum[mid] = cc.quantum
                if self.cfg.adaptive(name):
                    lo, hi = cc.bounds_ms()
                    self.cache.adapt[mid] = (lo * 1e6, hi * 1e6, cc.tolerance)
        self.cache.on_clear = self.publish_cache
        now = time.time_ns()
        for mid in ModelId:
            ms.begin_period(a, int(mid), int(self.versions[mid]))
            state = a["model_state"][mid]
            state[[ms.MS_STATE, ms.MS_VERSION, ms.MS_LOADED_AT_NS]] = (ms.STATE_SERVING, self.versions[mid], now)
            state[ms.MS_PINNED] = self.cfg.model_versions.get(mid.name.lower(), 0)
        self.seen_requests = np.zeros(_loop.N_MODELS, np.int64)
        self.loader = _lifecycle.Loader(
            backend=self.cfg.backend, models_dir=self.cfg.models_dir, max_batch=self.cfg.max_batch,
            install=self._prepare_install,
            on_done=lambda: ms.ask_housekeeping(a),  # a prepared version is swapped in at the next quiet moment
        )  # fmt: skip
        self.swaps: list[_lifecycle.Candidate] = []  # prepared, waiting for the loop to swap them in
        self.rescan = False  # SIGHUP: re-scan the repository and apply the policy

    def _make_channels(self) -> None:
        prefix = self.cfg.prefix
        own = {"access": self.access, "replace_untrusted": self.cfg.replace_untrusted}
        for name in self.served:
            ch = ringbuf.Channel.create(
                prefix, name, sq_capacity=self.cfg.sq_capacity, cq_capacity=self.cfg.cq_capacity, reuse=True, **own
            )
            # Alive from the start: a client attaching before the first housekeeping must not read
            # heartbeat 0 as a daemon gone (the breakers trip on a stale heartbeat).
            self._mark_alive(ch, time.monotonic_ns())
            self.channels.append(ch)
            if name == self.probe_name:
                ch.unlink()  # the probe uses this mapping: no caller may ever attach
        self.publish_cache()
        self.rings = ringbuf.ChannelTable(self.channels)
        for c, ch in enumerate(self.channels):
            if not ch.created:
                log("channel_reattached", self.cfg.log_format, channel=ch.name, pending=self.rings.pending(c))

    def _beat_while_starting(self) -> None:
        """Keep the heartbeat fresh from a thread until the loop's housekeeping takes over (``serve_forever``).

        Loading the loop's code (compiling it on a cold numba cache: 20-50 s under load) and
        starting the shim are a daemon alive, not hung: a client attaching meanwhile must not
        read the heartbeat written when the channels were made as a daemon gone (the C client
        refused one as hung, 48 s old). Not ready is said elsewhere: ``startup`` in the stats
        segment, ``/health`` "starting", no ``event=ready`` yet, and requests wait in the SQ.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HOUSEKEEPING_NS / 1e9):
                now = time.monotonic_ns()
                self.stats.arrays["heartbeat"][0] = now
                for ch in self.channels:
                    self._mark_alive(ch, now)

        thread = threading.Thread(target=beat, name="shmd-starting-heartbeat", daemon=True)
        thread.start()
        self._starting_beat: tuple[threading.Event, threading.Thread] | None = (stop, thread)

    def _stop_starting_beat(self) -> None:
        """The loop writes the heartbeat from now on (or the daemon is closing)."""
        starting, self._starting_beat = getattr(self, "_starting_beat", None), None
        if starting is not None:
            starting[0].set()
            starting[1].join()

    def _reset_corrupt_channels(self) -> None:
        """Re-create a corrupt channel once no client holds it.

        Corruption means the holder broke the protocol; its requests cannot be
        trusted, so nothing is carried over. Waiting for the hold to go keeps a
        live (if broken) client from writing into the fresh rings.
        """
        for c in self.rings.corrupt():
            old = self.channels[c]
            if _lock.holder(old.fd):
                continue
            old.unlink()
            try:
                fresh = ringbuf.Channel.create(
                    self.cfg.prefix, old.name, sq_capacity=self.cfg.sq_capacity, cq_capacity=self.cfg.cq_capacity,
                    access=self.access,
                )  # fmt: skip
            except (ringbuf.RingError, OSError) as err:  # e.g. someone took the name meanwhile: next round
                log("channel_reset_failed", self.cfg.log_format, channel=old.name, error=str(err))
                continue
            self._mark_alive(fresh, time.monotonic_ns())
            self.channels[c] = fresh
            self.publish_cache()
            self.rings.bind(c, fresh)
            old.close()
            log("channel_reset", self.cfg.log_format, channel=old.name, reason="corrupt")

    def _make_buffers(self) -> None:
        # Test-only (see _loop.fault_state); armed by start_serving: the probe's passes never count.
        self.fault = _loop.fault_state(os.environ.get("SHMD_TEST_FAULT", ""))
        self.batch = _pass.new_batch(
            self.cfg.max_batch, len(self.channels), max_queue_ns=int(self.cfg.max_queue_ms * 1e6),
            priorities=self._priorities(),
        )  # fmt: skip
        # The idle spin's upper bound; the loop learns the window below it. With one CPU
        # to run on, a spinning loop would only keep the client it waits for off that CPU.
        self.spin_ns = int(self.cfg.spin_us * 1000) if len(os.sched_getaffinity(0)) > 1 else 0
        self.batch.state[PASS_SPIN_NS] = min(self.spin_ns, _loop.INITIAL_WAKE_NS)  # then learnt
        self.sleep_ns = int(self.cfg.sleep_timeout_ms * 1e6)
        # The five descriptors of every step (see _pass_layout). Serving another model
        # version is replacing self.models between two steps.
        self.models = _pass.new_models(self.batch, self.runners)
        self._rings = _pass.rings_of(self.rings)
        self._cache = _pass.cache_of(self.cache)
        self._counters = _pass.counters_of(self.metrics, self.stats.arrays["loop"])
        self._step: Any = None  # _loop.step_entry for these descriptors' types ...
        self._step_types = b""  # ... (numba's fingerprint of self.models' types) ...
        self._step_models: Any = None  # ... checked for this self.models
        self.passes = 0
        self.last_housekeeping = 0
        self.last_cache_count = 0

    # --- the loop -------------------------------------------------------------------

    def step(self, n_prev: int, spin_ns: int, sleep_ns: int = 0) -> int:
        """Publish the previous pass (``n_prev`` records), drain and run the next ones.

        Returns the number of records drained that wait for ``infer`` (a Python
        runner) and the next ``step``: 0 when none came within ``spin_ns`` and a
        sleep of at most ``sleep_ns`` (0: no sleep).
        """
        _pass.set_wait(self.batch, spin_ns, sleep_ns)
        if self._step_models is not self.models:  # another model version: the same types, as a rule
            # The fingerprint numba's dispatcher keys argument types on: ~5 µs, where re-typing the
            # descriptors for step_entry took 1-9 ms, on the loop's thread, at every swap.
            types = compute_fingerprint(self.models)
            if types != self._step_types:
                self._step = _loop.step_entry(self._rings, self.batch, self.models, self._cache, self._counters)
                self._step_types = types
            self._step_models = self.models
        n = self._step(self._rings, self.batch, self.models, self._cache, self._counters, n_prev)
        if n_prev:
            self.passes += 1
        return n

    def infer(self) -> None:
        """Run each Python-called model once on the rows the last drain queued for it.

        The outputs go to ``batch.raw``; models of the compiled bank already ran in ``step``.
        """
        b = self.batch
        for mid, runner in self.python_runners.items():
            cnt = int(b.counts[mid])
            if not cnt:
                continue
            try:
                b.raw[mid, :cnt, : self.n_raw[mid]] = runner.predict(b.features[mid, :cnt, : self.n_features[mid]])
            except Exception as err:  # a failing model must not take the daemon or other models down
                rows = b.rows[mid, :cnt]
                b.responses["status"][rows] = Status.INTERNAL
                self.metrics.model[mid, met.ERRORS] += cnt
                np.add.at(self.metrics.channel[:, met.REJECTED + Status.INTERNAL], self._channel_of(rows), 1)
                b.counts[mid] = 0
                log("model_error", self.cfg.log_format, model=ModelId(mid).name.lower(), error=repr(err))

    def _channel_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.batch.offsets[1:], rows, side="right")

    def _mark_alive(self, ch: ringbuf.Channel, now: int) -> None:
        """The words clients check for a live daemon: ours to write, and rewritten at every
        housekeeping since a holder may scribble on them."""
        ch.header["daemon_pid"], ch.header["daemon_heartbeat_ns"] = self.pid, now

    def housekeeping(self) -> None:
        """Every ``HOUSEKEEPING_NS``, or at once when asked (``_model_states.ask_housekeeping``: a load)."""
        if not self.housekeeping_due():
            return
        now = time.monotonic_ns()
        a = self.stats.arrays
        a["loop"][LOOP_HOUSEKEEPING_ASKED] = 0  # before reading what it asks about: a later ask stays set
        self.last_housekeeping = now
        a["heartbeat"][:] = (now, self.passes)
        self.notifier.heartbeat(now)  # WATCHDOG=1 only from here: a wedged loop stops the pings
        self.publish_cache()  # TTLs changed since (adaptive TTL) reach the clients within a housekeeping period
        corrupt = set(self.rings.corrupt().tolist())
        for c, ch in enumerate(self.channels):
            self._mark_alive(ch, now)
            tampered = self.rings.check_tampered(c)
            if tampered:  # served no more; re-created once its holder lets go
                log("channel_tampered", self.cfg.log_format, channel=ch.name, what=tampered)
            a["gauges"][c] = (self.rings.queued(c), c in corrupt or bool(tampered))
        self._reset_corrupt_channels()
        if self.http is not None:
            self.http.check()
        control = a["control"]
        seq = int(control[SEQUENCE])
        if seq != control[DONE]:
            self._control(int(control[COMMAND]), int(control[ARGUMENT]))
            self.last_cache_count = 0  # count now: a cleared cache reads empty once the command is done
        self._lifecycle_requests()
        if now - self.last_cache_count >= CACHE_COUNT_NS:  # a full scan: not every housekeeping
            self.last_cache_count = now
            for mid in ModelId:
                a["cache_entries"][mid] = self.cache.entries_live(int(mid), now)
        control[DONE] = seq

    def loop_sleep_ns(self) -> int:
        """The idle loop's longest sleep now: short until the start-up probe is through and while a load runs.

        A sleep ends early for a request, not for the loader finishing a version (its ask for
        housekeeping is a word the sleeping loop does not watch): an idle daemon would swap it
        in up to a whole sleep (``sleep_timeout_ms``, 100 ms) later.
        """
        if not self.started:
            return min(self.sleep_ns, STARTUP_SLEEP_NS)
        return min(self.sleep_ns, LOADING_SLEEP_NS) if self.loader.pending else self.sleep_ns

    def housekeeping_due(self) -> bool:
        return bool(time.monotonic_ns() - self.last_housekeeping >= HOUSEKEEPING_NS
                    or self.stats.arrays["loop"][LOOP_HOUSEKEEPING_ASKED])  # fmt: skip

    def publish_cache(self) -> None:
        """Show every channel's clients the TTLs and generations the cache uses now.

        ``self.cache.ttl_ns`` (the stats segment's ``cache_ttl_ns``) is the one
        TTL the loop reads and adaptive TTL tunes: nothing else needs updating;
        clients see a new TTL within a housekeeping period (entries they already
        keep live out the TTL they were stored with, as the daemon's own do). A
        clear publishes at once (``CacheArrays.on_clear``), before the next pass,
        so no client serves an entry of the old generation.
        """
        for ch in self.channels:
            ch.header["cache_ttl_ns"] = np.maximum(self.cache.ttl_ns, 0)
            ch.header["cache_generation"] = self.cache.generation

    def _control(self, command: int, argument: int) -> None:
        model = argument if argument in {int(m) for m in ModelId} else None
        if command == CMD_RESET_METRICS:
            self._reset_metrics(model)
        elif command == CMD_CLEAR_CACHE:
            self.cache.clear(model)
            self.last_cache_count = 0  # recount now: whoever asked reads the entries next
        log("control", self.cfg.log_format, command=command, model=argument)

    def _priorities(self) -> list[int]:
        """Each served channel's priority; the probe channel takes the lowest callers' level, so it adds
        no level of its own (a level's rank sets where it sheds: ``_pass.new_batch``)."""
        levels = [self.cfg.priority(name) for name in self.names]
        return levels + [min(levels)] * (len(self.served) - len(self.names))

    @property
    def probe_channel(self) -> ringbuf.Channel | None:
        """The start-up probe's channel (the last one), when it has one (``--no-http``)."""
        return self.channels[-1] if self.probe_name else None

    def _reset_metrics(self, model: int | None) -> None:
        """Zero the counters of ``model`` (None: every model and channel) and its cache statistics."""
        self.metrics.reset(model)
        for mid in ModelId if model is None else (model,):
            ms.reset(self.stats.arrays, int(mid))
        if model is None:
            self.cache.stats[...] = 0
        else:
            self.cache.stats[model] = 0

    def start_serving(self, outcome: _readiness.Outcome) -> None:
        """The start-up probe is through: serve callers from the next pass on, then ``on_started``.

        Runs on the loop's thread between two passes (``serve_forever``), so none of the
        probe's passes is still in ``finish`` when the fault point is armed: the probe never
        counts toward ``SHMD_TEST_FAULT``. Metrics and cache start empty, as if the probe's
        predictions had never been made; ``startup`` in the stats segment keeps their number.
        """
        if outcome.requests:
            self._reset_metrics(None)
            self.cache.clear(None)
            self.last_cache_count = 0
        self.stats.arrays["startup"][:] = (1, outcome.requests)
        if self.probe_name:
            # The probe's channel (the last row) leaves the loop's table: the idle loop sleeps on the
            # callers' SQ words only (futex_waitv looks up every word's key on every sleep). Views of
            # the same arrays, of the same types: the compiled step is kept, a re-bind still shows.
            self._rings = Rings(*(a[: len(self.names)] for a in self._rings))
        self.batch.state[PASS_FAULT_COUNTDOWN], self.batch.state[PASS_FAULT] = self.fault[1], self.fault[0]
        self.started = True
        self.on_started(outcome)

    # --- model versions ------------------------------------------------------------------

    def _lifecycle_requests(self) -> None:
        """Start the loads asked for (control words, SIGHUP), collect the prepared ones for a swap."""
        import models

        a = self.stats.arrays
        state = a["model_state"]
        for mid in ModelId:
            seq = int(state[mid, ms.MS_REQ_SEQ])
            if seq != self.seen_requests[mid]:
                self.seen_requests[mid] = seq
                self._want(int(mid), int(state[mid, ms.MS_REQ_VERSION]), seq)
        if self.rescan:
            self.rescan = False
            log("rescan", self.cfg.log_format, models_dir=self.cfg.models_dir or models.default_models_dir())
            for mid in ModelId:
                version = self._policy_version(mid)
                if version is not None and version != self.loader.pending.get(int(mid), self.versions[mid]):
                    self._want(int(mid), version, 0)
        for cand in self.loader.finished():
            for line in cand.native:  # printed in the loader process
                log("native_log", self.cfg.log_format, line=line)
            if cand.error:
                self._answer(cand.mid, cand.seq, ms.RESULT_REFUSED, cand.error)
                log("model_refused", self.cfg.log_format, model=ModelId(cand.mid).name.lower(),
                    version=cand.version, reason=cand.error)  # fmt: skip
            else:
                self.swaps.append(cand)

    def _want(self, mid: int, version: int, seq: int) -> None:
        """Serve ``version`` of ``mid``: prepare it beside the serving one (request ``seq``; 0: the policy)."""
        import models

        name = ModelId(mid).name.lower()
        on_disk = models.versions_on_disk(self.cfg.models_dir, mid)
        if version not in on_disk:
            where = models.version_dir(self.cfg.models_dir, mid, max(version, 1))
            self._answer(mid, seq, ms.RESULT_NOT_FOUND, f"version: {name} has no version {version} in the repository "
                         f"({where} has no manifest.json; versions on disk: {on_disk})")  # fmt: skip
        elif version == self.versions[mid] and mid not in self.loader.pending:
            self._answer(mid, seq, ms.RESULT_UNCHANGED, f"{name} version {version} is already serving")
        else:
            self.stats.arrays["model_state"][mid, ms.MS_STATE] = ms.STATE_LOADING
            self.stats.arrays["model_state"][mid, ms.MS_LOADING] = version
            self.loader.submit(mid, version, seq)
            log("model_loading", self.cfg.log_format, model=name, version=version, serving=int(self.versions[mid]))

    def _answer(self, mid: int, seq: int, result: int, reason: str) -> None:
        a = self.stats.arrays
        state = a["model_state"][mid]
        if mid not in self.loader.pending:
            state[ms.MS_STATE], state[ms.MS_LOADING] = ms.STATE_SERVING, 0
        ms.write_reason(a, mid, reason)
        state[ms.MS_RESULT] = result
        if seq:
            state[ms.MS_DONE_SEQ] = seq  # last: the requester reads the rest once it sees this

    def _flush(self, n: int) -> int:
        """Finish the pass in hand and drain nothing: afterwards no request is in flight."""
        if n:
            room = int(self.batch.state[PASS_ROOM])
            self.batch.state[PASS_ROOM] = 0
            try:
                self.step(n, 0, 0)
            finally:
                self.batch.state[PASS_ROOM] = room
        return 0

    def _prepare_install(self, mid: int, runner: Any) -> tuple[dict[int, Any], _pass.Models]:
        """On the loader's thread: the runners and the pass's ``Models`` with ``runner`` serving ``mid``.

        Built beside the loop (which runs without the GIL), so the swap between two passes only
        assigns them: the loop stops for that, not for building the compiled bank.
        """
        runners = {**self.runners, mid: runner}
        return runners, _pass.new_models(self.batch, runners)

    def _swap(self, cand: _lifecycle.Candidate) -> None:
        """Serve ``cand`` from the next pass on; no pass may be in flight (``_flush``)."""
        mid, a = cand.mid, self.stats.arrays
        previous = int(self.versions[mid])
        runners, models = cand.install or ({}, None)
        if any(runners.get(m) is not r for m, r in self.runners.items() if m != mid):  # not prepared, or another
            runners, models = self._prepare_install(mid, cand.runner)  # model was swapped since it was
        self.runners, self.models = runners, models
        self.versions[mid] = cand.version
        self._python_runners()
        self.cache.clear(mid)  # answers of the old version are never served again
        ms.begin_period(a, mid, cand.version)
        state = a["model_state"][mid]
        state[ms.MS_VERSION] = cand.version
        state[ms.MS_LOADED_AT_NS] = time.time_ns()
        state[ms.MS_SWAP_NS] = time.monotonic_ns() - cand.requested_ns
        self._answer(mid, cand.seq, ms.RESULT_SWAPPED, f"{ModelId(mid).name.lower()} version {cand.version} serving "
                     f"(was {previous})")  # fmt: skip
        self.last_cache_count = 0
        log("model_swapped", self.cfg.log_format, model=ModelId(mid).name.lower(), version=cand.version,
            previous=previous, load_ms=round(state[ms.MS_SWAP_NS] / 1e6, 1))  # fmt: skip

    # --- the loop, continued ---------------------------------------------------------------

    def serve_forever(self) -> None:
        self._stop_starting_beat()
        self.housekeeping()  # the loop's own heartbeat from here on
        n = self.pending
        if n:
            self.infer()
        while not self.stopping:
            n = self.step(n, self.spin_ns, self.loop_sleep_ns())
            if n:
                self.infer()
                if not self.housekeeping_due():
                    continue
                # Publish these answers first: housekeeping (up to a full cache scan) must not delay them.
                n = self.step(n, 0, 0)
                if n:
                    self.infer()
            self.housekeeping()
            if self.swaps:  # between two passes: the one in hand finishes on the version it started with
                n = self._flush(n)
                for cand in self.swaps:
                    self._swap(cand)
                self.swaps = []
            if not self.started and self.probed is not None:  # between two passes, as a swap
                n = self._flush(n)
                self.start_serving(self.probed)
        if n:  # publish what the last pass drained (what this drains again stays in the SQ)
            self.step(n, 0, 0)

    # --- stop -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the shim, unmap everything; unlink what we own unless told to keep it."""
        self._stop_starting_beat()
        if self.http is not None:
            self.http.stop()
        if hasattr(self, "loader"):
            self.loader.close()
        keep = self.cfg.keep_segments
        for ch in self.channels:
            ch.header["daemon_pid"] = 0
            if not keep:
                ch.unlink()
            ch.close()
        self.channels = []
        if hasattr(self, "stats"):
            self.stats.unlink()


def _loop_failed(daemon: Daemon, err: Exception) -> NoReturn:
    """The poll loop raised: say what and where in one event, remove the segments, exit at once.

    Serving on is not an option (the pass that raised may have left a channel half
    answered) and neither is lingering: a service manager restarts the daemon only
    once the process is gone, so it ``_exit``s with EXIT_LOOP_FAILED, skipping an
    interpreter shutdown that could wait on native thread pools.
    """
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{os.path.relpath(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    log("loop_failed", daemon.cfg.log_format, error=f"{type(err).__name__}: {err}", where=where, passes=daemon.passes,
        exit_code=EXIT_LOOP_FAILED, traceback="".join(traceback.format_exception(err)))  # fmt: skip
    daemon.notifier.send(status=f"poll loop failed: {type(err).__name__}: {err}")
    try:
        daemon.close()
    except Exception as close_err:  # still exit with the loop's code; say what was left behind
        log("cleanup_failed", daemon.cfg.log_format, error=repr(close_err))
    sys.stderr.flush()
    os._exit(EXIT_LOOP_FAILED)


def main(argv: list[str]) -> int:
    from models import ArtifactError

    try:
        cfg = _config.load(argv)
        stale = purge_stale_numba_caches()  # a working tree's edits must not run as old inlined code
        if stale:
            log("stale_compiled_code_removed", cfg.log_format, files=stale)
        daemon = Daemon(cfg, probe=True)
    except (ShmdError, ringbuf.RingError) as err:
        print(f"shmd serve: {err}", file=sys.stderr)
        return EXIT_START_FAILED
    except ArtifactError as err:
        print(f"shmd serve: {err}; rebuild the artifacts with `shmd train --out DIR` and pass --models-dir DIR, "
              "or reinstall shmd", file=sys.stderr)  # fmt: skip
        return EXIT_START_FAILED

    def stop(signum: int, _frame: Any) -> None:
        daemon.stopping = True
        daemon.notifier.stopping()

    def rescan(signum: int, _frame: Any) -> None:
        daemon.rescan = True
        ms.ask_housekeeping(daemon.stats.arrays)  # at the next quiet moment, not up to a housekeeping period later

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, rescan)
    log_event = lambda event, **kv: log(event, cfg.log_format, **kv)  # noqa: E731
    if cfg.http:
        daemon.http = HttpChild(cfg, log_event)
        t1 = time.monotonic()
        try:
            daemon.http.start()
        except ShmdError as err:
            daemon.close()
            print(f"shmd serve: {err}", file=sys.stderr)
            return EXIT_START_FAILED
        daemon.phases_ms["http_ms"] = _ms_since(t1)
    t0 = time.monotonic()

    def started(outcome: _readiness.Outcome) -> None:
        """On the loop's thread once the probe is through: ``event=ready``, then READY=1 if it succeeded."""
        log(
            "ready", cfg.log_format, pid=os.getpid(), prefix=cfg.prefix, channels=",".join(daemon.names),
            models=",".join(f"{m.name.lower()}@{daemon.versions[m]}" for m in ModelId),
            backend=cfg.backend, startup_ms=round((daemon.startup_s + time.monotonic() - t0) * 1000, 1),
            probe="ok" if outcome.status else outcome.error, probe_requests=outcome.requests,
            **daemon.phases_ms, probe_ms=round(outcome.ms, 1), process_age_ms=_process_age_ms(),
            http=f"{cfg.host}:{cfg.port}" if cfg.http else "off", http_workers=cfg.workers if cfg.http else 0,
        )  # fmt: skip
        if not daemon.notifier.enabled:
            return
        if outcome.error:  # READY is never sent: systemd's start timeout then fails the unit, which is the truth
            log_event("not_ready", error=outcome.error)
            daemon.notifier.send(status=f"readiness probe failed: {outcome.error}")
        else:
            daemon.notifier.ready(outcome.status)
            log_event("notified", ready=1, status=outcome.status)

    daemon.on_started = started
    _readiness.start(cfg, daemon.probe_channel, lambda outcome: setattr(daemon, "probed", outcome))
    try:
        daemon.serve_forever()
    except Exception as err:
        _loop_failed(daemon, err)
    finally:  # a clean stop (SIGTERM/SIGINT); _loop_failed never gets here
        daemon.close()
    log("stopped", cfg.log_format, passes=daemon.passes)
    return 0


__all__ = ["Daemon", "main"]
