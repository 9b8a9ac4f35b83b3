"""``python -m bench NAME [--quick] [--json PATH]``: run one benchmark (``report``: build REPORT.md).

Each benchmark is the module ``bench.NAME`` with ``main(argv) -> int``; it prints a
human table and, with ``--json``, writes one JSON object with its figures, the
baselines measured in the same run, and their ratios.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = (
    "ring", "models", "daemon", "http", "native", "pace", "faults", "soak", "priorities", "ttl", "lifecycle", "startup",
    "report",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m bench {{{','.join(BENCHMARKS)}}} [--quick] [--json PATH]", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"bench.{argv[0]}").main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
