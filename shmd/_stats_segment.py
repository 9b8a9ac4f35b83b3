"""The daemon's stats segment: its metrics and cache arrays, in shared memory.

``/{prefix}.stats`` holds a JSON directory (names, dtypes, shapes, offsets,
plus metadata such as the channel and model names) followed by the arrays
themselves. The daemon's compiled loop updates the arrays in place; readers
(the HTTP shim, ``shmd status``) map the segment and compute snapshots with
no request to the daemon. The daemon also holds a record lock on the
segment: that is how a second daemon on the prefix finds the first.

Control (metrics reset, cache clear) goes through the ``control`` array:
a writer fills ``command`` and ``argument`` and then bumps ``sequence``; the
daemon executes it between passes and copies ``sequence`` to ``done``.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import posix_ipc

from kernel_abi import STATS_NAME
from ringbuf import PRIVATE, Access, SegmentNotFound, Trust, open_own_segment, open_peer_segment, reserve, segment_name

from ._errors import DaemonRunning
from ._lock import holder, try_lock

MAGIC = b"SHMDSTAT"
_HEAD = struct.Struct("<8sQ")  # magic, directory length
_DIRECTORY_ROOM = 16384

# control words
SEQUENCE, COMMAND, ARGUMENT, DONE = range(4)
CMD_RESET_METRICS, CMD_CLEAR_CACHE = 1, 2


def already_running(prefix: str, pid: int) -> DaemonRunning:
    return DaemonRunning(
        f"prefix {prefix!r} is already served by the daemon with pid {pid}; "
        f"stop it (kill -TERM {pid}) or start with another --prefix"
    )


@dataclass
class StatsSegment:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    name: str
    _shm: posix_ipc.SharedMemory
    _map: mmap.mmap

    @property
    def fd(self) -> int:
        return self._shm.fd

    @classmethod
    def create(
        cls,
        prefix: str,
        spec: dict[str, tuple[np.dtype | type, tuple[int, ...]]],
        meta: dict[str, Any],
        access: Access = PRIVATE,
        *,
        replace_untrusted: bool = False,
    ) -> StatsSegment:
        """A fresh, locked segment holding zeroed arrays of ``spec``, with ``access``'s mode and group.

        A stale segment (its daemon died: no lock on it) is reused if it is
        this user's own (see ``ringbuf.open_own_segment``); a live daemon's
        raises DaemonRunning naming its pid.
        """
        directory: dict[str, Any] = {"meta": meta, "arrays": {}}
        offset = _DIRECTORY_ROOM
        for key, (dtype, shape) in spec.items():
            dt = np.dtype(dtype)
            directory["arrays"][key] = {"dtype": dt.str, "shape": list(shape), "offset": offset}
            offset += -(-int(np.prod(shape)) * dt.itemsize // 64) * 64
        blob = json.dumps(directory).encode()
        if _HEAD.size + len(blob) > _DIRECTORY_ROOM:
            raise ValueError(f"stats directory too large: size={len(blob)} limit={_DIRECTORY_ROOM - _HEAD.size}")
        name = segment_name(prefix, STATS_NAME)
        shm, _ = open_own_segment("stats segment", name, access, replace=replace_untrusted)
        pid = try_lock(shm.fd)
        if pid:
            shm.close_fd()
            raise already_running(prefix, pid)
        os.ftruncate(shm.fd, 0)  # drop any predecessor's content
        os.ftruncate(shm.fd, offset)
        reserve(shm, name, offset)
        buf = mmap.mmap(shm.fd, offset)
        buf[_HEAD.size : _HEAD.size + len(blob)] = blob
        buf[: _HEAD.size] = _HEAD.pack(MAGIC, len(blob))
        return cls._views(name, shm, buf, directory)

    @staticmethod
    def serving_pid(prefix: str) -> int:
        """Pid of the live daemon holding the prefix, or 0."""
        try:
            shm = posix_ipc.SharedMemory(segment_name(prefix, STATS_NAME))
        except posix_ipc.ExistentialError:
            return 0
        try:
            return holder(shm.fd)
        finally:
            shm.close_fd()

    @classmethod
    def attach(cls, prefix: str, trust: Trust | None = None) -> StatsSegment:
        """Map a running daemon's stats segment (its owner checked like a channel's, ``Trust.daemon()``)."""
        name = segment_name(prefix, STATS_NAME)
        try:
            shm = open_peer_segment("stats segment", name, trust or Trust.daemon())
        except posix_ipc.ExistentialError:
            raise SegmentNotFound(f"no stats segment {name}: is `shmd serve --prefix {prefix}` running?") from None
        if shm.size < _DIRECTORY_ROOM:
            shm.close_fd()
            raise SegmentNotFound(f"stats segment {name} is not initialised yet (size={shm.size})")
        buf = mmap.mmap(shm.fd, shm.size)
        magic, length = _HEAD.unpack(buf[: _HEAD.size])
        if magic != MAGIC:
            buf.close()
            shm.close_fd()
            raise SegmentNotFound(f"stats segment {name} has magic={magic!r}, expected {MAGIC!r}")
        directory = json.loads(bytes(buf[_HEAD.size : _HEAD.size + length]))
        return cls._views(name, shm, buf, directory)

    @classmethod
    def _views(cls, name: str, shm: posix_ipc.SharedMemory, buf: mmap.mmap, directory: dict) -> StatsSegment:
        arrays = {
            key: np.frombuffer(
                buf, np.dtype(d["dtype"]), int(np.prod(d["shape"])), d["offset"]
            ).reshape(d["shape"])
            for key, d in directory["arrays"].items()
        }
        return cls(arrays, directory["meta"], name, shm, buf)

    def command(self, command: int, argument: int = 0) -> int:
        """Ask the daemon to run a control command; the sequence number to wait for."""
        control = self.arrays["control"]
        control[COMMAND] = command
        control[ARGUMENT] = argument
        control[SEQUENCE] += 1
        return int(control[SEQUENCE])

    def close(self) -> None:
        """Drop the mapping; views still held elsewhere keep it until they go."""
        self.arrays = {}
        try:
            self._map.close()
        except BufferError:
            pass  # a caller's view is alive: the GC unmaps when it goes
        self._shm.close_fd()

    def unlink(self) -> None:
        try:
            posix_ipc.unlink_shared_memory(self.name)
        except posix_ipc.ExistentialError:
            pass
