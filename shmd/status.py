"""``shmd status [--host H] [--port N]``: a running daemon's metrics, one line each.

Reads ``GET /api/ml/metrics`` from the HTTP shim (stdlib urllib, so the
command starts fast) and prints one line per model and one per channel.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO


def fetch(host: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    """The shim's metrics document; OSError (URLError) when nothing answers."""
    with urllib.request.urlopen(f"http://{host}:{port}/api/ml/metrics", timeout=timeout) as resp:
        return json.loads(resp.read())


def render(doc: dict[str, Any], out: TextIO) -> None:
    """One header line, one line per model, one per channel."""
    d = doc.get("daemon", {})
    print(
        f"shmd pid {d.get('pid', '?')} prefix {d.get('prefix', '?')} backend {d.get('backend', '?')} "
        f"heartbeat {d.get('heartbeatAgeMs', -1):.1f} ms ago{'' if d.get('heartbeatFresh') else ' (STALE)'}",
        file=out,
    )
    for name, m in doc.get("metrics", {}).items():
        print(
            f"model   {name:<9} v{m.get('modelVersion', 0):<3} total {m['totalInferences']:>9}  "
            f"hits {m['cacheHits']:>8} ({100 * m.get('cacheHitRate', 0.0):5.1f}%)  errors {m.get('errors', 0):>6}  "
            f"p50 {m['p50LatencyMs']:.3f} p95 {m['p95LatencyMs']:.3f} p99 {m['p99LatencyMs']:.3f} "
            f"max {m['maxLatencyMs']:.3f} ms",
            file=out,
        )
    for name, c in doc.get("channels", {}).items():
        print(
            f"channel {name:<9} submitted {c['submitted']:>9}  completed {c['completed']:>9}  "
            f"rejected {c['rejected']:>6}  queue {c['queueDepth']:>5}{'  CORRUPT' if c.get('corrupt') else ''}",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shmd status", description="Print a running daemon's metrics.")
    p.add_argument("--host", default="127.0.0.1", help="the HTTP shim's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9005, help="the HTTP shim's port (default 9005)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        doc = fetch(args.host, args.port)
    except urllib.error.HTTPError as err:
        print(f"shmd status: http://{args.host}:{args.port} answered {err.code}: {err.reason}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        print(
            f"shmd status: no shmd daemon reachable at http://{args.host}:{args.port} ({reason}); "
            "start one with `shmd serve` or pass --host/--port",
            file=sys.stderr,
        )
        return 1
    render(doc, sys.stdout)
    return 0


__all__ = ["fetch", "main", "render"]
