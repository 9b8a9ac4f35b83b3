"""Who may open a shared-memory object, and whose objects to trust.

Every name in /dev/shm is first come, first served: any local user can
create ``/dev/shm/<prefix>.scheduler`` before the daemon does. A daemon that
reused such a segment would serve its callers through a stranger's memory,
and a caller that attached to one would talk to a stranger's daemon. So:

- the daemon creates each object itself with its ``Access`` (mode ``0600``,
  or ``0660`` and a group so that callers in the group can attach) and
  reuses an existing one only if it is its own: owner its uid, mode no wider
  than configured, group the configured one (``Trust.own``);
- a caller attaches only to a segment owned by a uid it expects the daemon
  to run as (``Trust.daemon``): ``$SHMD_DAEMON_UID`` when set, else root, the
  caller itself, or the ``shmd`` system user.

``check`` is the one place both decisions are made.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

import posix_ipc

from ._errors import AccessDenied, UntrustedObject

DEFAULT_MODE = 0o600
GROUP_MODE = 0o660
SHM_DIR = Path("/dev/shm")
DAEMON_UID_ENV = "SHMD_DAEMON_UID"
SERVICE_USER = "shmd"  # the user of packaging/systemd/shmd.service


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user(uid: int) -> str:
    return f"{_user_name(uid)}({uid})"


def _group(gid: int) -> str:
    return f"{_group_name(gid)}({gid})"


def shm_path(name: str) -> Path:
    """Where the object named ``/x`` lives: ``/dev/shm/x``."""
    return SHM_DIR / name.lstrip("/")


@dataclass(frozen=True)
class Access:
    """The mode and group the daemon gives every object it creates."""

    mode: int = DEFAULT_MODE
    gid: int | None = None  # set: group-accessible (GROUP_MODE) by this group

    @classmethod
    def for_group(cls, group: str | None) -> Access:
        """``0600`` without a group; ``0660`` owned by ``group`` with one (KeyError if it does not exist)."""
        if group is None:
            return cls()
        return cls(GROUP_MODE, grp.getgrnam(group).gr_gid)

    def apply(self, target: int | Path) -> None:
        """Set mode and group on an fd or path: the umask must not decide what callers can open."""
        if isinstance(target, int):
            os.fchmod(target, self.mode)
            if self.gid is not None:
                os.fchown(target, -1, self.gid)
        else:
            os.chmod(target, self.mode)
            if self.gid is not None:
                os.chown(target, -1, self.gid)


PRIVATE = Access()  # 0600, the daemon's own group: only its user can open what it creates


@dataclass(frozen=True)
class Trust:
    """What an existing object must look like to be used: its owner, and for the daemon its mode and group."""

    owners: frozenset[int]
    access: Access | None = None  # None: any mode (a caller does not choose the daemon's)
    fix: str = ""  # the advice appended to a refusal

    @classmethod
    def own(cls, access: Access) -> Trust:
        """The daemon's rule: only objects this process's user made, no wider than ``access``."""
        return cls(
            frozenset({os.geteuid()}), access,
            "remove it (as root: rm it from /dev/shm) and find out who made it, "
            "or start with --replace-untrusted to unlink and re-create it",
        )  # fmt: skip

    @classmethod
    def daemon(cls, uid: int | None = None) -> Trust:
        """A caller's rule: the segment must belong to the daemon's user.

        ``uid`` (else ``$SHMD_DAEMON_UID``) names that user exactly; without
        either, root, this process's own user and the ``shmd`` service user
        are trusted: none of them is a stranger to this caller.
        """
        text = os.environ.get(DAEMON_UID_ENV, "").strip()
        if uid is None and text:
            if not text.isdigit():
                raise ValueError(f"{DAEMON_UID_ENV} must be a numeric uid: {DAEMON_UID_ENV}={text!r}")
            uid = int(text)
        if uid is not None:
            owners = {uid}
        else:
            owners = {0, os.geteuid()}
            try:
                owners.add(pwd.getpwnam(SERVICE_USER).pw_uid)
            except KeyError:
                pass
        return cls(
            frozenset(owners), None,
            "another user may have made it before the daemon (squatting the name): do not use it; "
            f"if the daemon really runs as that user, set {DAEMON_UID_ENV} (or daemon_uid=) to its uid",
        )  # fmt: skip


def describe(st: os.stat_result) -> str:
    return f"owner={_user(st.st_uid)} group={_group(st.st_gid)} mode={stat.S_IMODE(st.st_mode):04o}"


def check(kind: str, name: str, st: os.stat_result, trust: Trust) -> None:
    """Raise ``UntrustedObject`` (one line: the object, its owner, group and mode) unless ``trust`` holds."""
    mode = stat.S_IMODE(st.st_mode)
    access = trust.access
    wrong = st.st_uid not in trust.owners
    if access is not None:
        wrong = wrong or bool(mode & ~access.mode)
        wrong = wrong or bool(mode & 0o070 and access.gid is not None and st.st_gid != access.gid)
    if not wrong:
        return
    expected = "owner=" + (" or ".join(_user(u) for u in sorted(trust.owners)))
    if access is not None:
        expected += f" mode<={access.mode:04o}"
        if access.gid is not None:
            expected += f" group={_group(access.gid)}"
    raise UntrustedObject(f"{kind} {name} is not trusted: {describe(st)} found, {expected} expected; {trust.fix}")


def denied(kind: str, name: str, path: Path) -> AccessDenied:
    """The error for a permission refusal: who this process is, and which user or group could open it."""
    me = f"{_user(os.geteuid())} group={_group(os.getegid())}"
    try:
        st = path.stat()
    except OSError:
        return AccessDenied(f"cannot open {kind} {name} as {me}: permission denied")
    owner = _user_name(st.st_uid)
    if stat.S_IMODE(st.st_mode) & 0o060:
        group = _group_name(st.st_gid)
        who = f"run as user {owner} or as a member of group {group} (usermod -aG {group} <user>)"
    else:
        who = f"run as user {owner}, or start the daemon with --group <a group of this user> to share it"
    return AccessDenied(f"cannot open {kind} {name} as {me}: {describe(st)}; {who}")


def open_own_segment(
    kind: str, name: str, access: Access, *, replace: bool, size: int = 0
) -> tuple[posix_ipc.SharedMemory, bool]:
    """The daemon's segment ``name``: created with ``access`` (True), or its own existing one (False).

    An existing segment must pass ``Trust.own(access)``, else
    ``UntrustedObject``; with ``replace`` it is unlinked and created afresh.
    """
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=access.mode, size=size)
    except posix_ipc.ExistentialError:
        shm = posix_ipc.SharedMemory(name)
        try:
            check(kind, name, os.fstat(shm.fd), Trust.own(access))
        except UntrustedObject as err:
            shm.close_fd()
            if not replace:
                raise
            _unlink(name, err)
            return open_own_segment(kind, name, access, replace=False, size=size)
        return shm, False
    access.apply(shm.fd)  # the umask must not widen or narrow what was asked
    return shm, True


def _unlink(name: str, err: UntrustedObject) -> None:
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.PermissionsError:
        # /dev/shm is sticky: only the owner or root can remove another user's file.
        raise UntrustedObject(f"{err}; cannot unlink it as {_user(os.geteuid())}: remove it as root") from None
    except posix_ipc.ExistentialError:
        pass


def open_peer_segment(kind: str, name: str, trust: Trust) -> posix_ipc.SharedMemory:
    """Open the existing segment ``name`` as a caller: ExistentialError if absent, else trusted or refused."""
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.PermissionsError:
        raise denied(kind, name, shm_path(name)) from None
    try:
        check(kind, name, os.fstat(shm.fd), trust)
    except UntrustedObject:
        shm.close_fd()
        raise
    return shm
