"""Fault harness: a real ``shmd serve`` with its HTTP shim, C, Python and HTTP callers at once, faults on demand.

    with Cluster(prefix) as cluster:                 # daemon + shim on a free loopback port
        callers = cluster.start_callers(seconds=10)  # one process per caller kind
        cluster.kill9_and_restart()                  # or .stop_for(2.0), ...
        results = callers.finish()                   # {"py": {...}, "c": {...}, "http": {...}}

Every caller counts each call's outcome exactly once: ``ok`` (answered by the
daemon), ``fallback`` (the C client's rules), ``errors`` by kind (a status, an
HTTP status, a refused connection: the caller was told), ``lost`` (no answer
at all within the call's timeout) and ``duplicated`` (an answer delivered for a
request that already had one). ``dropped`` is what the client itself discarded
(answers for requests it no longer waits for, e.g. re-sent after a restart).

Caller processes: ``python -m tests._faults py PREFIX CHANNEL SECONDS TIMEOUT [DEADLINE_MS]``
and ``python -m tests._faults http PORT SECONDS TIMEOUT``; the C caller is
``shmd_roundtrip watch``. Each runs until SECONDS pass or SIGTERM, then prints
one JSON summary line.
Used by tests/test_faults*.py and by ``python -m bench faults`` / ``soak``.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
C_TOOLS = ROOT / "kernel_abi" / "c" / "build"
BATCH = 4  # records per Python call
CHANNELS = ("py", "c", "spare")


# --------------------------------------------------------------- the daemon side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Cluster:
    """``shmd serve`` (HTTP on a free port) under ``prefix``, restartable on the same prefix."""

    def __init__(self, prefix: str, *, channels: tuple[str, ...] = CHANNELS, extra: tuple[str, ...] = ()) -> None:
        from ._http_daemon import Daemon

        self.prefix = prefix
        self.port = free_port()
        self.channels = channels
        self.extra = extra
        self.restarts = 0
        self._daemon_cls = Daemon
        self.daemon = Daemon(prefix, port=self.port, channels=",".join(channels), env=self._env())

    def _env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(ROOT), **dict(a.split("=", 1) for a in self.extra)}

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def rss_kib(self) -> int:
        """Resident set of the daemon process (KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def kill9_and_restart(self) -> float:
        """SIGKILL the daemon (no cleanup runs), start a new one on the prefix; seconds it was down."""
        t0 = time.monotonic()
        self.daemon.proc.kill()
        self.daemon.proc.wait(10)
        self.daemon._log.close()
        deadline = time.monotonic() + 15
        while not port_free(self.port):  # its shim dies with it (PDEATHSIG)
            assert time.monotonic() < deadline, "the killed daemon's HTTP shim still holds the port"
            time.sleep(0.05)
        self.daemon = self._daemon_cls(self.prefix, port=self.port, channels=",".join(self.channels), env=self._env())
        self.restarts += 1
        return time.monotonic() - t0

    def stop_for(self, seconds: float) -> None:
        """SIGSTOP the daemon for ``seconds``, then SIGCONT."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.daemon.alive()

    def log(self) -> str:
        return self.daemon.log()

    def close(self) -> list[str]:
        """Stop the daemon; what it left in /dev/shm (cleaned up either way)."""
        return self.daemon.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_callers(self, seconds: float, *, timeout: float = 20.0, kinds: tuple[str, ...] = ("py", "c", "http"),
                      channel: str = "py", deadline_ms: float = 0.0) -> Callers:  # fmt: skip
        return Callers(self, seconds, timeout, kinds, channel, deadline_ms)


class Callers:
    """One process per caller kind, running for ``seconds``."""

    def __init__(
        self, cluster: Cluster, seconds: float, timeout: float, kinds: tuple[str, ...], channel: str, deadline_ms: float
    ) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        me = [sys.executable, "-m", "tests._faults"]
        for kind in kinds:
            if kind == "py":
                cmd = [*me, "py", cluster.prefix, channel, str(seconds), str(timeout), str(deadline_ms)]
            elif kind == "http":
                cmd = [*me, "http", str(cluster.port), str(seconds), str(timeout)]
            else:
                cmd = [str(C_TOOLS / "shmd_roundtrip"), "watch", cluster.prefix, "c", str(seconds)]
            self.procs[kind] = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env
            )
            assert self.procs[kind].stdin is not None
            if kind == "c":
                self.procs[kind].stdin.write(_c_request())
            self.procs[kind].stdin.close()
            self.procs[kind].stdin = None  # communicate() must not flush it
        self.seconds = seconds
        self.timeout = timeout

    def wait_started(self, timeout: float = 90.0) -> None:
        """Until every caller has had its first answer (its first line: C prints its first source)."""
        deadline = time.monotonic() + timeout
        for kind, proc in self.procs.items():
            assert proc.stdout is not None
            while not select.select([proc.stdout], [], [], 0.1)[0]:
                assert proc.poll() is None, f"{kind} caller exited with {proc.returncode}"
                assert time.monotonic() < deadline, f"{kind} caller had no answer within {timeout}s"
            proc.stdout.readline()

    def finish(self) -> dict[str, dict[str, Any]]:
        """Stop every caller (SIGTERM: it ends its call in hand), wait (bounded), return their summaries."""
        out: dict[str, dict[str, Any]] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for kind, proc in self.procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=self.seconds + self.timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                out[kind] = {"hung": True, "stderr": stderr.decode()[-2000:]}
                continue
            try:
                out[kind] = _summary(kind, stdout.decode(), proc.returncode)
            except RuntimeError as err:  # its death is the finding: keep the other callers' figures
                out[kind] = {"kind": kind, "died": str(err), "errors": {"died": 1}}
            out[kind]["exit"] = proc.returncode
            out[kind]["stderr"] = stderr.decode()[-2000:]
        return out

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def _c_request() -> bytes:
    from kernel_abi import ABI_VERSION, PAYLOADS, REQUESTS
    from shmd._codec import encode_payloads, model_id
    from shmd.samples import SAMPLES

    mid = model_id("workload")
    rec = np.zeros(1, REQUESTS[mid])
    rec["payload"] = encode_payloads(mid, [SAMPLES["workload"]])
    rec["model_id"], rec["abi_version"], rec["payload_len"] = mid, ABI_VERSION, PAYLOADS[mid].itemsize
    return rec.tobytes()


def _summary(kind: str, stdout: str, returncode: int) -> dict[str, Any]:
    """A caller's last line as its summary; a caller that ended without one is named with its exit status."""
    lines = stdout.splitlines()
    mine = [ln for ln in lines if ln.startswith("stats ")] if kind == "c" else lines
    if not mine:
        raise RuntimeError(
            f"{kind} caller printed no summary: exit={returncode} (negative: killed by that signal); "
            f"its last lines: {lines[-3:]!r}"
        )
    last = mine[-1]
    return _c_summary(last) if kind == "c" else json.loads(last)


def _c_summary(line: str) -> dict[str, Any]:
    """``shmd_roundtrip watch``'s stats line as a summary like the other callers'."""
    n = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return {
        "kind": "c", "calls": n["calls"], "ok": n["daemon"], "fallback": n["fallback"],
        "errors": {"fallback": n["fallback"]} if n["fallback"] else {},
        "lost": n["calls"] - n["daemon"] - n["fallback"], "duplicated": 0, "dropped": n["dropped"],
        "trips": n["trips"], "recoveries": n["recoveries"],
    }  # fmt: skip


# --------------------------------------------------------------- caller processes


class _Tally:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls = self.ok = self.lost = self.duplicated = self.dropped = 0
        self.errors: dict[str, int] = {}
        self._started = False
        self.worst_miss_ms = 0.0  # how long after its deadline a caller learnt it was missed
        self.t0 = time.monotonic()
        self.latency_ms: dict[int, list[float]] = {}  # by minute

    def started(self) -> None:
        """The first answer: one line on stdout (Callers.wait_started reads it)."""
        if not self._started:
            self._started = True
            print("started", flush=True)

    def error(self, what: str, n: int = 1) -> None:
        self.errors[what] = self.errors.get(what, 0) + n

    def latency(self, seconds: float) -> None:
        self.latency_ms.setdefault(int((time.monotonic() - self.t0) // 60), []).append(seconds * 1e3)

    def dump(self) -> None:
        everything = [v for mins in self.latency_ms.values() for v in mins]
        print(json.dumps({
            "kind": self.kind, "calls": self.calls, "ok": self.ok, "errors": self.errors, "lost": self.lost,
            "duplicated": self.duplicated, "dropped": self.dropped, "worst_miss_ms": self.worst_miss_ms,
            "p99_ms_by_minute": [float(np.percentile(self.latency_ms[m], 99)) for m in sorted(self.latency_ms)],
            "p50_ms": float(np.percentile(everything, 50)) if everything else None,
            "p99_ms": float(np.percentile(everything, 99)) if everything else None,
            "max_ms": max(everything) if everything else None,
        }), flush=True)  # fmt: skip


def _py_caller(prefix: str, channel: str, seconds: float, timeout: float, deadline_ms: float = 0.0) -> None:
    """Record-level calls of BATCH workload records; every id is accounted for exactly once.

    With ``deadline_ms`` each record carries that deadline and the caller gives up
    on it then (counted as ``DeadlineMissed``: the caller knows, as with a fallback).
    """
    from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, ModelId, Status
    from shmd import ShmdError
    from shmd._codec import encode_payload
    from shmd.client import Client, now_ns
    from shmd.samples import SAMPLES

    tally = _Tally("py")
    recs = np.zeros(BATCH, REQUESTS[ModelId.WORKLOAD])
    recs["payload"] = encode_payload(ModelId.WORKLOAD, SAMPLES["workload"])
    recs["model_id"], recs["abi_version"] = ModelId.WORKLOAD, ABI_VERSION
    recs["payload_len"], recs["flags"] = PAYLOADS[ModelId.WORKLOAD].itemsize, REQ_NO_CACHE
    answered: set[int] = set()
    client: Client | None = None
    end = time.monotonic() + seconds
    while _running(end):
        if client is None:
            try:
                client = Client(channel, prefix=prefix, timeout=timeout)
            except ShmdError as err:
                tally.error(type(err).__name__)
                time.sleep(0.05)
                continue
        recs["request_id"] = client.new_ids(BATCH)
        recs["payload"]["current_cpu"] = np.random.default_rng().random(BATCH)
        recs["submit_ns"] = now_ns()
        recs["deadline_ns"] = recs["submit_ns"] + int(deadline_ms * 1e6) if deadline_ms else 0
        ids = [int(i) for i in recs["request_id"]]
        waiting = set(ids)
        t0 = time.monotonic()
        deadline = t0 + (deadline_ms / 1e3 if deadline_ms else timeout)
        sent = 0
        tally.calls += 1
        try:
            while waiting and time.monotonic() < deadline:
                if sent < BATCH:
                    sent += client.submit(recs[sent:].view(REQUEST))
                client.wait(0.02)
                for r in client.reap():
                    rid = int(r["request_id"])
                    if rid in answered:
                        tally.duplicated += 1
                        continue
                    answered.add(rid)
                    waiting.discard(rid)
                    if int(r["status"]) == Status.OK:
                        tally.ok += 1
                    else:
                        tally.error(Status(int(r["status"])).name)
        except ShmdError as err:  # the channel went bad: what is unanswered was refused, not lost
            tally.error(type(err).__name__, len(waiting))
            waiting.clear()
            client.close()
            client = None
        if waiting:
            if deadline_ms:
                tally.error("DeadlineMissed", len(waiting))
                tally.worst_miss_ms = max(tally.worst_miss_ms, (time.monotonic() - t0) * 1e3 - deadline_ms)
            else:
                tally.lost += len(waiting)
            if client is not None:
                client.forget(list(waiting))
        else:
            tally.latency(time.monotonic() - t0)
            tally.started()
    if client is not None:
        tally.dropped = client.dropped
        client.close()
    tally.dump()


def _http_caller(port: int, seconds: float, timeout: float) -> None:
    """One keep-alive connection, sequential POSTs; a refused or reset connection is retried."""
    from tests._http_daemon import valid

    tally = _Tally("http")
    conn: http.client.HTTPConnection | None = None
    end = time.monotonic() + seconds
    i = 0
    while _running(end):
        body = json.dumps(valid("workload", i)).encode()
        i += 1
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        t0 = time.monotonic()
        tally.calls += 1
        try:
            conn.request("POST", "/api/ml/predict/workload", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = json.loads(resp.read())
        except TimeoutError:
            tally.lost += 1
            conn.close()
            conn = None
            continue
        except (ConnectionError, http.client.HTTPException, OSError) as err:
            tally.error(type(err).__name__)
            conn.close()
            conn = None
            time.sleep(0.02)
            continue
        if resp.status == 200 and payload.get("success"):
            tally.ok += 1
            tally.latency(time.monotonic() - t0)
            tally.started()
        else:
            tally.error(f"http{resp.status}")
    tally.dump()


# --------------------------------------------------------------- fault actions on the spare channel


def _spare_records(client: Any, model: str, n: int) -> np.ndarray:
    from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUESTS
    from shmd._codec import encode_payload, model_id
    from shmd.client import now_ns
    from shmd.samples import SAMPLES

    mid = model_id(model)
    recs = np.zeros(n, REQUESTS[mid])
    recs["payload"] = encode_payload(mid, SAMPLES[model])
    recs["request_id"] = client.new_ids(n)
    recs["model_id"], recs["abi_version"], recs["payload_len"] = mid, ABI_VERSION, PAYLOADS[mid].itemsize
    recs["flags"], recs["submit_ns"] = REQ_NO_CACHE, now_ns()
    return recs


def stall_reaping(prefix: str, seconds: float, channel: str = "spare") -> dict[str, Any]:
    """A client fills its CQ (two ring-fulls submitted), reaps nothing for ``seconds``, then everything.

    Returns what it got back: every id once and in order is ``in_order``.
    """
    from kernel_abi import REQUEST
    from shmd.client import Client

    with Client(channel, prefix=prefix) as stalled:
        cap = stalled.channel.cq.capacity
        batches = [_spare_records(stalled, "memory", cap) for _ in range(2)]
        deadline = time.monotonic() + seconds + 30
        for recs in batches:  # one ring-full fills the CQ, the next waits in the SQ
            sent = 0
            while sent < cap and time.monotonic() < deadline:
                sent += stalled.submit(recs[sent:].view(REQUEST))
                time.sleep(0.005)
            while stalled._cq.ready() < cap and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(seconds)
        answered: list[int] = []
        while len(answered) < 2 * cap and time.monotonic() < deadline:
            stalled.wait(0.05)
            answered += [int(i) for i in stalled.reap()["request_id"]]
    expected = [int(i) for recs in batches for i in recs["request_id"]]
    return {"submitted": 2 * cap, "answered": len(answered), "in_order": answered == expected,
            "lost": len(set(expected) - set(answered)), "duplicated": len(answered) - len(set(answered))}  # fmt: skip


def kill_caller_mid_batch(prefix: str, channel: str = "spare", n: int = 512) -> dict[str, Any]:
    """A caller submits ``n`` requests and is killed (-9); the next holder must get none of their answers."""
    from kernel_abi import REQUEST
    from shmd.client import Client

    code = (
        "import time; from kernel_abi import REQUEST; from shmd.client import Client; "
        "from tests._faults import _spare_records; "
        f"c = Client({channel!r}, prefix={prefix!r}); r = _spare_records(c, 'threat', {n}); "
        "print(c.submit(r.view(REQUEST)), flush=True); time.sleep(60)"
    )
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert victim.stdout is not None
        submitted = int(victim.stdout.readline() or 0)
        victim.kill()  # mid-batch: its requests are queued or being answered
        victim.wait(10)
    finally:
        victim.kill()
    deadline = time.monotonic() + 15
    with Client(channel, prefix=prefix) as heir:  # reclaimed: the kernel dropped the dead holder's lock
        start = int(heir.channel.cq.header["produced"])  # answers published on this channel so far
        while heir.channel.sq.header["head"] < heir.channel.sq.header["tail"] and time.monotonic() < deadline:
            time.sleep(0.01)  # the daemon answers the dead caller's batch...
        mine = _spare_records(heir, "workload", 8)
        assert heir.submit(mine.view(REQUEST)) == 8
        got: list[int] = []
        while len(got) < 8 and time.monotonic() < deadline:
            heir.wait(0.05)
            got += [int(i) for i in heir.reap()["request_id"]]
        return {"submitted_by_victim": submitted, "answered_before_heir": start, "heir_answers": len(got),
                "heir_got_only_its_own": sorted(got) == sorted(int(i) for i in mine["request_id"]),
                "dropped_by_heir": heir.dropped}  # fmt: skip


def scribble_header(prefix: str, rng: np.random.Generator, channel: str = "spare") -> dict[str, Any]:
    """A holder writes a random hostile value into a random header word, detaches; seconds until usable again."""
    from kernel_abi import CHANNEL_HEADER, RING_HEADER
    from shmd import ShmdError
    from shmd.client import Client
    from shmd.samples import SAMPLES

    region = str(rng.choice(["channel", "sq", "cq"]))
    dtype = CHANNEL_HEADER if region == "channel" else RING_HEADER
    word = int(rng.choice(sorted({dtype.fields[f][1] // 8 for f in dtype.names})))
    values = [0, 1, 2**63, 2**64 - 1, int(rng.integers(0, 2**63))]
    value = values[int(rng.integers(len(values)))]  # not rng.choice: it goes through float64 (2**64 - 1 -> 2**64)
    with Client(channel, prefix=prefix, timeout=0.2) as hostile:
        ch = hostile.channel
        ring = ch.sq if region == "sq" else ch.cq
        words = ch.header.reshape(1).view(np.uint64) if region == "channel" else ring.hdr64
        words[word] = value
        time.sleep(0.05)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        try:
            with Client(channel, prefix=prefix, timeout=1.0) as fresh:
                fresh.predict("memory", SAMPLES["memory"])
            return {"region": region, "word": word, "value": value, "recovered_s": time.monotonic() - t0}
        except ShmdError:
            time.sleep(0.02)
    return {"region": region, "word": word, "value": value, "recovered_s": None}


_stopping = False


def _on_term(_sig: int, _frame: Any) -> None:
    global _stopping
    _stopping = True


def _running(end: float) -> bool:
    return not _stopping and time.monotonic() < end


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)  # finish the call in hand, then print the summary
    mode = sys.argv[1]
    if mode == "py":
        prefix, channel, seconds, timeout, *deadline = sys.argv[2:]
        _py_caller(prefix, channel, float(seconds), float(timeout), float(deadline[0]) if deadline else 0.0)
    elif mode == "http":
        _http_caller(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        usage = "python -m tests._faults py PREFIX CHANNEL SECONDS TIMEOUT | http PORT SECONDS TIMEOUT"
        sys.exit(f"usage: {usage} (not {mode!r})")
