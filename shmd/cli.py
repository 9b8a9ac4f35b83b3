"""The ``shmd`` command: serve, train, status, models."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "serve": ("shmd.daemon", "run the daemon in the foreground"),
        "train": ("models.train", "train the four models and write their artifacts"),
        "status": ("shmd.status", "print a running daemon's metrics"),
        "models": ("shmd.models_cmd", "list model versions, load one while serving"),
    }
    if not argv or argv[0] not in commands:
        print("usage: shmd {serve,train,status,models} [options]\n", file=sys.stderr)
        for name, (_, what) in commands.items():
            print(f"  {name:<7} {what}", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    import importlib

    module = importlib.import_module(commands[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
