"""``shmd models list|load``: the model repository beside what serves, and hot loads.

Talks to the daemon through its stats segment (``shmd._model_states``), like the HTTP
shim's ``/api/ml/models`` endpoints, so it works with ``--no-http`` too; reaching the
segment needs the daemon's user or group, which is what guards it (the HTTP endpoint's
bearer token guards the network path).

    shmd models list [--prefix P] [--json]
    shmd models load MODEL VERSION [--prefix P] [--timeout S]

``load`` exits 0 once the version serves, 1 when it was refused or is not on disk (the
daemon's reason on stderr), 2 when no daemon serves the prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from kernel_abi import ModelId

from . import _model_report
from . import _model_states as ms


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shmd models", description="List model versions; load one while serving.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="per model: versions on disk, the one serving, its state")
    ls.add_argument("--json", action="store_true", help="the same document as GET /api/ml/models")
    load = sub.add_parser("load", help="load, validate and warm a version, then swap it in")
    load.add_argument("model", choices=[m.name.lower() for m in ModelId])
    load.add_argument("version", type=int)
    load.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the outcome (default 120)")
    for q in (ls, load):
        q.add_argument("--prefix", default="shmd", help="the daemon's prefix (default shmd)")
    return p


def _ring_daemon(prefix: str, channels: list[str]) -> None:
    """Wake an idle daemon so it reads the load request now, not after its sleep (up to 100 ms).

    The request is words of the stats segment, which a sleeping daemon does not watch: ring
    the doorbell of one of its channels (their SQ wake-up words are what it sleeps on), as the
    HTTP shim's load handler does. Nothing is published into the channel; its holder is not
    disturbed. Without a channel to ring (or one not ours to map) the daemon still gets to
    the request, at the end of its sleep.
    """
    from ringbuf import Channel, RingError, ring_doorbell

    if not channels:
        return
    try:
        ch = Channel.attach(prefix, channels[0])
    except (RingError, OSError):
        return
    try:
        with contextlib.suppress(OSError):  # a courtesy: the sleep's end is the fallback
            ring_doorbell(ch.sq)
    finally:
        ch.close()


def main(argv: list[str]) -> int:
    from ringbuf import SegmentNotFound

    from ._stats_segment import StatsSegment

    args = _parser().parse_args(argv)
    try:
        seg = StatsSegment.attach(args.prefix)
    except (SegmentNotFound, OSError) as err:
        print(f"shmd models: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "list":
            report = _model_report.models_report(seg)
            if args.json:
                print(json.dumps(report, indent=2))
            for m in [] if args.json else report:
                loading = f" (loading v{m['loadingVersion']})" if m["loadingVersion"] else ""
                print(f"{m['model']:<9} serving v{m['servingVersion']}{loading}  policy {m['policy']}  "
                      f"on disk {','.join(map(str, m['versionsOnDisk']))}  loaded {m['loadedAt']}  "
                      f"last load: {m['lastLoad']['result']} {m['lastLoad']['reason']}")  # fmt: skip
            return 0
        mid = int(ModelId[args.model.upper()])
        seq = ms.request_load(seg.arrays, mid, args.version)
        _ring_daemon(args.prefix, seg.meta["channels"])
        got = _model_report.wait_outcome(seg, mid, seq, args.timeout)
        if got is None:
            print(f"shmd models: no outcome in {args.timeout} s; `shmd models list` shows the state", file=sys.stderr)
            return 1
        result, serving, reason = got
        if result in (ms.RESULT_SWAPPED, ms.RESULT_UNCHANGED) and serving == args.version:
            print(f"{args.model} version {serving} serving: {reason}")
            return 0
        print(f"shmd models: {args.model} version {args.version} not loaded, version {serving} serving: {reason}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        seg.close()
