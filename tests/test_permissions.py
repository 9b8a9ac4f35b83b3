"""Shared access and no squatting, tried by real users.

The tests run as root and use two fixed system users, created once if
absent and reused: ``shmdtest`` (its group is the daemon's ``--group``) and
``shmdsquat`` (a stranger). A process "running as" one of them is a fork of
the test that drops to that user's uid and gids before touching shared
memory: the interpreter here lives under /root, which other users cannot
read, so a fresh ``python`` could not start as them.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import posix_ipc
import pytest

import ringbuf
from kernel_abi import ABI_VERSION, REQUEST, REQUESTS, ModelId
from ringbuf import Access, Channel, Trust, UntrustedObject
from shmd import samples
from shmd.client import Client

from ._daemon import DaemonProcess

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root and useradd"),
]

MEMBER, STRANGER = "shmdtest", "shmdsquat"
ROOT = Path(__file__).resolve().parent.parent
ROUNDTRIP = ROOT / "kernel_abi" / "c" / "build" / "shmd_roundtrip"
SHM = Path("/dev/shm")


def _ensure_user(name: str) -> pwd.struct_passwd:
    """The system user ``name`` with a group of the same name, created if absent (and left for the next run)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True)  # fmt: skip
        return pwd.getpwnam(name)


@pytest.fixture(scope="module")
def users() -> dict[str, pwd.struct_passwd]:
    return {name: _ensure_user(name) for name in (MEMBER, STRANGER)}


def run_as(user: pwd.struct_passwd, fn: Callable[[], str]) -> str:
    """``fn()`` in a forked child running as ``user`` (its own group only); its result or 'ERR <type>: <msg>'."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root for good, then act
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            out = fn()
        except BaseException as err:
            out = f"ERR {type(err).__name__}: {err}"
            if not isinstance(err, ringbuf.RingError):
                out += "\n" + traceback.format_exc()
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def _workload_record() -> bytes:
    from shmd import _codec

    rec = np.zeros(1, REQUESTS[ModelId.WORKLOAD])
    rec["payload"] = _codec.encode_payloads(ModelId.WORKLOAD, [samples.WORKLOAD])
    rec["model_id"] = ModelId.WORKLOAD
    rec["abi_version"] = ABI_VERSION
    rec["payload_len"] = rec["payload"].dtype.itemsize
    return rec.tobytes()


def _warm_ring_code(prefix: str) -> None:
    """Compile (or load) the ring functions here, so a forked child inherits them instead of compiling."""
    with Channel.create(prefix, "warm", sq_capacity=2) as ch:
        ringbuf.Producer(ch.sq).produce(np.zeros(1, REQUEST))
        ringbuf.Consumer(ch.cq).consume(1)
        ch.unlink()


# --- group access --------------------------------------------------------------------------------


def test_group_members_attach_from_python_and_c_strangers_are_told_who_can(
    prefix: str, users: dict[str, pwd.struct_passwd]
) -> None:
    member, stranger = users[MEMBER], users[STRANGER]
    _warm_ring_code(prefix)
    with DaemonProcess(prefix, "--group", MEMBER, "--channels", "scheduler,memory") as daemon:
        objects = ringbuf.leftovers(prefix)
        assert len(objects) == 3  # 2 channels and the stats segment: no semaphores since ABI v2
        for name in objects:
            assert _owner(SHM / name[1:]) == ("root", MEMBER, 0o660), name

        def predict() -> str:
            with Client("scheduler", prefix, timeout=10) as client:
                return repr(sorted(client.predict("workload", samples.WORKLOAD)))

        assert "'predictedCpu'" in run_as(member, predict), daemon.log()

        # The C client, as the member: a real binary run with the member's uid and group.
        c_run = subprocess.run(
            [ROUNDTRIP, "rt", prefix, "memory"], input=_workload_record(), capture_output=True,
            user=member.pw_uid, group=member.pw_gid, extra_groups=[], timeout=30,
        )  # fmt: skip
        assert c_run.returncode == 0, c_run.stderr
        assert c_run.stdout.split()[1] == b"0"  # status OK

        c_refused = subprocess.run(
            [ROUNDTRIP, "rt", prefix, "memory"], input=_workload_record(), capture_output=True,
            user=stranger.pw_uid, group=stranger.pw_gid, extra_groups=[], timeout=30,
        )  # fmt: skip
        gid = grp.getgrnam(MEMBER).gr_gid
        assert (f"cannot open /{prefix}.memory as uid {stranger.pw_uid}: owner uid=0 gid={gid} mode=0660; "
                f"run as uid 0 or as a member of gid {gid}").encode() in c_refused.stderr, c_refused  # fmt: skip

        refused = run_as(stranger, predict)
        assert re.match(
            rf"^ERR AccessDenied: cannot open channel segment /{prefix}\.scheduler as {STRANGER}\(\d+\) "
            rf"group={STRANGER}\(\d+\): owner=root\(0\) group={MEMBER}\(\d+\) mode=0660; "
            rf"run as user root or as a member of group {MEMBER} \(usermod -aG {MEMBER} <user>\)$",
            refused,
        ), refused
        assert daemon.stop() == 0


# --- squatting ---------------------------------------------------------------------------------

SQUATS = {
    # what the stranger creates before the daemon starts -> the kind named in the refusal, its mode
    # (the careful squatter's 0600 channel is refused for its owner alone)
    "channel": ("scheduler", "channel segment", 0o600),
    "stats": ("stats", "stats segment", 0o666),
}


def _squat(prefix: str, what: str, stranger: pwd.struct_passwd, template: bytes) -> Path:
    """As the stranger: create the object (a copy of a valid channel for a channel)."""
    name, mode = f"/{prefix}.{SQUATS[what][0]}", SQUATS[what][2]

    def create() -> str:
        os.umask(0)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=max(len(template), 4096))
        os.pwrite(shm.fd, template, 0)
        shm.close_fd()
        return "ok"

    assert run_as(stranger, create) == "ok"
    return SHM / name[1:]


@pytest.mark.parametrize("what", sorted(SQUATS))
def test_daemon_refuses_a_squatted_object_then_replaces_it_when_told(
    prefix: str, users: dict[str, pwd.struct_passwd], what: str
) -> None:
    stranger = users[STRANGER]
    with Channel.create(f"{prefix}tpl", "scheduler") as valid:  # the daemon's own default capacities
        template = (SHM / valid.segment[1:]).read_bytes()
        valid.unlink()
    path = _squat(prefix, what, stranger, template)
    before = path.read_bytes()

    cmd = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--no-http", "--channels", "scheduler"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stderr
    (name, kind, mode) = f"/{prefix}.{SQUATS[what][0]}", *SQUATS[what][1:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(
        rf"^shmd serve: {kind} {re.escape(name)} is not trusted: owner={STRANGER}\(\d+\) group={STRANGER}\(\d+\) "
        rf"mode={mode:04o} found, owner=root\(0\) mode<=0600 expected; remove it .* or start with --replace-untrusted",
        last,
    ), proc.stderr
    assert "event=ready" not in proc.stderr and "channel_reattached" not in proc.stderr
    # Refused means untouched, and nothing of the daemon's left behind.
    assert _owner(path) == (STRANGER, STRANGER, mode) and path.read_bytes() == before
    assert ringbuf.leftovers(prefix) == [name]

    if what == "stats":  # replaced by the same ringbuf.open_own_segment as a channel: one start less
        path.unlink()
        return
    with DaemonProcess(prefix, "--channels", "scheduler", "--replace-untrusted") as daemon:
        assert _owner(path) == ("root", "root", 0o600)
        assert "channel_reattached" not in daemon.log()
        assert daemon.stop() == 0


def test_daemon_refuses_its_own_segment_left_wider_than_configured(prefix: str) -> None:
    shared = Access.for_group(MEMBER if _group_exists(MEMBER) else "root")
    with Channel.create(prefix, "a", sq_capacity=2, access=shared):
        pass
    with pytest.raises(UntrustedObject, match=rf"^channel segment /{prefix}\.a is not trusted: .* mode=0660 found, "
                                              r"owner=root\(0\) mode<=0600 expected; "):  # fmt: skip
        Channel.create(prefix, "a", sq_capacity=2, reuse=True)
    again = Channel.create(prefix, "a", sq_capacity=2, reuse=True, access=shared)  # same access: reattached
    assert not again.created
    again.close()
    again.unlink()


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


# --- callers check the daemon's uid ------------------------------------------------------------


def test_clients_refuse_a_segment_owned_by_another_uid(
    prefix: str, users: dict[str, pwd.struct_passwd], monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = users[STRANGER]
    ch = Channel.create(prefix, "a", sq_capacity=2)
    os.fchown(ch.fd, stranger.pw_uid, -1)  # as if the stranger had made it
    wrong_owner = rf"^channel segment /{prefix}\.a is not trusted: owner={STRANGER}\(\d+\) .* found, owner=root\(0\)"
    with pytest.raises(UntrustedObject, match=wrong_owner):
        Client("a", prefix)
    monkeypatch.setenv(ringbuf.DAEMON_UID_ENV, "0")
    with pytest.raises(UntrustedObject, match=wrong_owner):
        Channel.attach(prefix, "a")
    # Told to expect that uid (argument or environment), the caller accepts it.
    Channel.attach(prefix, "a", trust=Trust.daemon(stranger.pw_uid)).close()
    monkeypatch.setenv(ringbuf.DAEMON_UID_ENV, str(stranger.pw_uid))
    Channel.attach(prefix, "a").close()
    monkeypatch.setenv(ringbuf.DAEMON_UID_ENV, "shmd")
    with pytest.raises(ValueError, match=r"^SHMD_DAEMON_UID must be a numeric uid: SHMD_DAEMON_UID='shmd'$"):
        Channel.attach(prefix, "a")

    # The C client: refused before mapping; with SHMD_DAEMON_UID it gets past the owner check.
    env = {k: v for k, v in os.environ.items() if k != ringbuf.DAEMON_UID_ENV}
    refused = subprocess.run([ROUNDTRIP, "rt", prefix, "a"], input=_workload_record(), capture_output=True, env=env)
    assert refused.returncode != 0
    assert re.search(rf"segment /{prefix}\.a is not trusted: owner uid={stranger.pw_uid} mode=0600 found".encode(),
                     refused.stderr + refused.stdout), refused  # fmt: skip
    trusted = subprocess.run([ROUNDTRIP, "rt", prefix, "a"], input=_workload_record(), capture_output=True,
                             env={**env, ringbuf.DAEMON_UID_ENV: str(stranger.pw_uid)})  # fmt: skip
    assert b"not trusted" not in trusted.stderr + trusted.stdout
    ch.close()
    ch.unlink()
