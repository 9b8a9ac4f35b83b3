"""The shim's channel library: kernel_abi/c/shmd_client.c plus ``_exchange.c``, built on first use.

The shim reaches its channel through the C client (loaded with ctypes) rather than
``shmd.client``, whose ring ends are numba-compiled: importing numba costs ~130 MB
resident per process, and the shim runs one process per HTTP worker.

The library is compiled with the C compiler shmd already requires (``cc``, or ``$CC``)
into the first of ``$SHMD_NATIVE_DIR``, ``$CACHE_DIRECTORY`` (systemd's ``CacheDirectory=``),
``$XDG_CACHE_HOME/shmd``, ``~/.cache/shmd`` that can be created, else a per-user temporary directory,
named after a hash of its sources and flags: a checkout, an installed package and
``make serve`` all build it the same way, a changed source rebuilds it, and workers
starting together compile it once (under a file lock).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import kernel_abi

_C_DIR = Path(kernel_abi.__file__).resolve().parent / "c"
# Every source of the C client library (a file added there is compiled in), and the shim's own.
SOURCES = (*sorted(_C_DIR.glob("*.c")), Path(__file__).resolve().parent / "_exchange.c")
HEADERS = (*sorted(_C_DIR.glob("*.h")), *sorted((_C_DIR.parent / "include").glob("*.h")))
CFLAGS = ("-std=c11", "-O2", "-fPIC", "-shared", f"-I{_C_DIR}", f"-I{_C_DIR.parent / 'include'}")
LDLIBS = ("-lpthread", "-lrt")


class NativeBuildError(RuntimeError):
    """The channel library could not be compiled: the message carries the compiler's output and the fix."""


def cache_dir() -> Path:
    """Where the library is built: the first candidate that exists or can be created."""
    env = os.environ
    candidates = [Path(env[k]) for k in ("SHMD_NATIVE_DIR", "CACHE_DIRECTORY") if env.get(k)]
    if env.get("XDG_CACHE_HOME"):
        candidates.append(Path(env["XDG_CACHE_HOME"]) / "shmd")
    if env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".cache" / "shmd")
    candidates.append(Path(tempfile.gettempdir()) / f"shmd-native-{os.getuid()}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            continue  # read-only home (a hardened service), say: try the next
        # Ours alone: the library found there is loaded into the shim (a shared /tmp must not decide it).
        if os.access(path, os.W_OK) and path.stat().st_uid == os.getuid() and not path.stat().st_mode & 0o022:
            return path
    raise NativeBuildError(f"no writable directory for the channel library; set SHMD_NATIVE_DIR: tried {candidates}")


def _digest(cc: str) -> str:
    h = hashlib.sha256(" ".join((cc, *CFLAGS, *LDLIBS)).encode())
    for path in (*SOURCES, *HEADERS):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def library_path() -> Path:
    """The built library, compiling it first if this version of the sources has none yet."""
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise NativeBuildError(f"no C compiler: CC={cc!r} is not on PATH; install gcc (apt-get install gcc)")
    out_dir = cache_dir()
    lib = out_dir / f"libshmd_shim-{_digest(cc)}.so"
    if lib.exists():
        return lib
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be compiling the same library
        if lib.exists():
            return lib
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cc, *CFLAGS, *map(str, SOURCES), "-o", str(tmp), *LDLIBS]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise NativeBuildError(f"compiling the channel library failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
        tmp.rename(lib)  # atomic: a reader sees the whole library or none
    return lib


def load() -> ctypes.CDLL:
    """The library with the signatures of the functions the shim calls."""
    lib = ctypes.CDLL(str(library_path()))
    vp, u64, c_char_p = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p
    lib.shim_open.argtypes = [c_char_p, c_char_p, c_char_p, ctypes.c_size_t]
    lib.shim_open.restype = vp
    lib.shim_close.argtypes = [vp]
    lib.shim_close.restype = None
    lib.shim_message.argtypes = [vp]
    lib.shim_message.restype = c_char_p
    lib.shim_dropped.argtypes = [vp]
    lib.shim_dropped.restype = u64
    lib.shim_fd.argtypes = [vp]
    lib.shim_fd.restype = ctypes.c_int
    lib.shim_begin.argtypes = [vp, vp, vp, vp, ctypes.c_uint, u64, u64, u64, u64, u64]
    lib.shim_begin.restype = ctypes.c_int
    lib.shim_prewake.argtypes = [vp]
    lib.shim_prewake.restype = ctypes.c_int
    lib.shim_result.argtypes = [vp]
    lib.shim_result.restype = ctypes.c_int
    lib.shmd_strerror.argtypes = [ctypes.c_int]
    lib.shmd_strerror.restype = c_char_p
    return lib


__all__ = ["NativeBuildError", "cache_dir", "library_path", "load"]
