"""The systemd notify protocol (sd_notify(3)), spoken directly: one datagram per message.

Under ``Type=notify`` the service manager puts the address of its datagram
socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for a Linux abstract
socket) and reads newline-separated ``KEY=value`` assignments from it:
``READY=1`` when the daemon really serves, ``STATUS=`` a line for
``systemctl status``, ``STOPPING=1`` when it begins to stop, and
``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` (else the service is killed
and, with ``Restart=on-failure``, restarted). Without ``$NOTIFY_SOCKET``
every call is a no-op, so nothing depends on systemd being there.

``WATCHDOG=1`` is sent only from the poll loop's heartbeat (``heartbeat``),
so a wedged loop stops the pings even though the process is alive.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

# sd_watchdog_enabled(3) advises pinging at half the timeout: one late pass
# must not cost the service a restart.
WATCHDOG_FRACTION = 2


class Notifier:
    """Sends notify messages to ``$NOTIFY_SOCKET``, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        # A leading '@' names an abstract socket: its address starts with a NUL byte.
        self.address = "\0" + raw[1:] if raw.startswith("@") else raw
        self.watchdog_ns = self._watchdog_ns(env)
        self.last_ping_ns = 0
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @staticmethod
    def _watchdog_ns(env: Mapping[str, str]) -> int:
        """The ping interval in ns, 0 when no watchdog is asked of this process."""
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            return 0
        # WATCHDOG_PID, when set, names the process the watchdog is meant for (not a child's).
        pid = env.get("WATCHDOG_PID")
        if usec <= 0 or (pid is not None and pid != str(os.getpid())):
            return 0
        return usec * 1000 // WATCHDOG_FRACTION

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when there is no socket or it failed.

        A manager that went away must not stop the daemon, so errors are swallowed.
        """
        if self._sock is None:
            return False
        text = "\n".join(f"{key.upper()}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            self._sock.sendto(text.encode(), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(stopping=1, status=status)

    def heartbeat(self, now_ns: int) -> None:
        """Ping the watchdog if half its timeout has passed since the last ping (call from the loop)."""
        if self.watchdog_ns and now_ns - self.last_ping_ns >= self.watchdog_ns:
            self.last_ping_ns = now_ns
            self.send(watchdog=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
