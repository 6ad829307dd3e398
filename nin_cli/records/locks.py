"""Who trains or evaluates a run directory: its lock (flock, or an owner file where the
filesystem has none). Taken by training and by `nin evaluate`, read by `nin progress`."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from nin_cli.errors import RecordError, RunInUse

LOCK = ".lock"

NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)  # Lustre without -o flock, NFS mounted nolock
STALE_AFTER_S = float(os.environ.get("NIN_LOCK_STALE_S", 6 * 3600))  # another host's lock file not refreshed this long is stale


class RunLock:
    """Who trains or evaluates a run directory: an exclusive flock on <run>/.lock holding the
    owner's PID (the kernel drops it with the process). Where the filesystem has no flock, an
    exclusive-create file <run>/.lock.owner holding host, PID and start time instead, refreshed
    while held (`refresh`, at every status write): on this host a dead PID frees it, from another
    host a file not refreshed for NIN_LOCK_STALE_S seconds (6 h) is taken over, with a warning."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.owner_path = run_dir / f"{LOCK}.owner"
        self.fd: int | None = None
        self.owned_file = False

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunInUse(
                f"{self.path.parent} is in use (trained or evaluated) by process {holder}; wait for it or stop it (a kill releases it)",
                holder,
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in NO_FLOCK:
                raise
            self._acquire_file()
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def _acquire_file(self) -> None:
        for _ in range(2):  # a second try after clearing a stale file
            try:
                fd = os.open(self.owner_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._read_owner()
                if owner is not None and not self._stale(owner):
                    host, pid, _ = owner
                    raise RunInUse(
                        f"{self.path.parent} is in use (trained or evaluated) by process {pid} on {host} "
                        f"(lock file {self.owner_path.name}: this filesystem has no flock); wait for it or stop it",
                        f"{pid} on {host}",
                    ) from None
                self.owner_path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n")
            self.owned_file = True
            return
        raise RecordError(f"{self.path.parent}: cannot take the lock file {self.owner_path.name}")

    def _read_owner(self) -> tuple[str, int, float] | None:
        try:
            host, pid, _started = self.owner_path.read_text().split()
            return host, int(pid), self.owner_path.stat().st_mtime
        except (OSError, ValueError):
            return None

    def _stale(self, owner: tuple[str, int, float]) -> bool:
        host, pid, refreshed = owner
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                reason = f"process {pid} on this host is gone"
            except PermissionError:
                return False
        else:
            age = time.time() - refreshed
            if age < STALE_AFTER_S:
                return False
            reason = f"process {pid} on {host} has not refreshed it for {age / 3600:.1f} h"
        print(f"nin: warning: {self.path.parent}: taking over a stale lock file ({reason})", file=sys.stderr)
        return True

    def refresh(self) -> None:
        """Mark a file lock as alive (its mtime); nothing to do for a flock."""
        if self.owned_file:
            try:
                os.utime(self.owner_path)
            except OSError:
                pass

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.owned_file:
            self.owner_path.unlink(missing_ok=True)
            self.owned_file = False

    def holder(self) -> int | None:
        """The PID of a live process holding the lock, or None (free, or never taken)."""
        owner = self._read_owner() if self.owner_path.exists() else None
        if owner is not None:
            host, pid, refreshed = owner
            if host != socket.gethostname():
                return pid if time.time() - refreshed < STALE_AFTER_S else None
            try:
                os.kill(pid, 0)
                return pid
            except ProcessLookupError:
                return None
            except PermissionError:
                return pid
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        except OSError as exc:
            if exc.errno in NO_FLOCK:
                return None
            raise
        finally:
            os.close(fd)
