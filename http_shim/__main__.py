"""``python -m http_shim --prefix P --channel C [--host H] [--port N] [--reuse-port]``.

The admin token guarding metrics reset and cache clear comes from the
environment (SHMD_ADMIN_TOKEN), never the command line, so it does not show
in ``ps``. The event loop is uvloop's (measured faster, see docs/ARCHITECTURE.md);
``SHMD_HTTP_LOOP=asyncio`` selects the standard one (``python -m bench http`` compares them).
The listening socket's connections start with ``_fastpath.FastPath`` (plain single
predictions answered without aiohttp's request machinery, everything else handed to
aiohttp), so the server is run here rather than by ``web.run_app``, the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys

from aiohttp import web

from ringbuf import SegmentNotFound
from shmd._errors import ShmdError

from ._app import SHIM, create_app
from ._fastpath import Listener
from ._native import NativeBuildError


def _exit_with_parent() -> None:
    """SIGTERM this process when its parent dies: a daemon killed with SIGKILL leaves no shim behind."""
    import ctypes
    import signal

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(f"http_shim: the parent process {parent} is gone")


def _event_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("SHMD_HTTP_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
        except ImportError:  # an install without it: the standard loop works, slower
            return asyncio.new_event_loop()
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m http_shim", description="Serve the shmd HTTP API.")
    p.add_argument("--prefix", default="shmd", help="the daemon's prefix (default shmd)")
    p.add_argument("--channel", default="http", help="the channel this shim holds (default http)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9005, help="port (default 9005)")
    p.add_argument("--reuse-port", action="store_true",
                   help="bind with SO_REUSEPORT, so several shim processes share the port")  # fmt: skip
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process (shmd serve) dies, even by SIGKILL (Linux)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon's answer")
    args = p.parse_args(argv)
    if args.exit_with_parent:
        _exit_with_parent()
    logging.basicConfig(level=logging.WARNING, format="http_shim %(levelname)s %(message)s")
    app = create_app(args.prefix, args.channel, admin_token=os.environ.get("SHMD_ADMIN_TOKEN"), timeout=args.timeout)
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    main_task = loop.create_task(_serve(app, args.host, args.port, reuse_port=args.reuse_port))
    try:
        loop.run_until_complete(main_task)
    except (web.GracefulExit, KeyboardInterrupt):  # SIGTERM / SIGINT, as web.run_app
        pass
    except (ShmdError, SegmentNotFound, NativeBuildError, OSError) as err:
        print(f"http_shim: {err}", file=sys.stderr)
        return 2
    finally:
        if not main_task.done():
            main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main_task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


async def _serve(app: web.Application, host: str, port: int, *, reuse_port: bool) -> None:
    """What ``web.run_app`` does (signals, start-up, clean-up), with ``FastPath`` as the connections' protocol."""
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()  # the app's start-up: attaches the channel and the stats segment
    assert runner.server is not None
    listener = Listener(app[SHIM], runner.server)
    server = None
    try:
        server = await asyncio.get_running_loop().create_server(listener, host, port, reuse_port=reuse_port or None)
        # Start-up's objects stay for the process's life: out of the collector's way (fewer, shorter pauses).
        gc.freeze()
        print("listening", flush=True)  # `shmd serve` waits for this line from every worker
        while True:
            await asyncio.sleep(3600)
    finally:
        if server is not None:
            server.close()
        listener.close()
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
