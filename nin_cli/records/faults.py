"""Named fault points for the records tests: `NIN_FAULT=point:n:what` makes this process fail at
the n-th time it passes `point`, as a crash would at that moment.

`what` is a signal name (SIGKILL, SIGTERM, SIGINT: sent to this process), an errno name
(ENOSPC, EROFS: raised as that OSError), PAUSE<seconds> (the process stops there that long), or
HOLD: the process writes `held.<pid>` into the directory `NIN_FAULT_GATE` and waits there until a
file `go` appears in it. HOLD is the deterministic point at which a test acts on a run
mid-training (kills it, signals it, requeues it, starts a second process on its lock) without
racing it; a signal sent while held is handled at that point. A process that reaches the point
again after `go` (a requeued job) passes straight through. Unset, a fault point costs one
environment lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter

_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("NIN_FAULT")  # read here, not at import: a process forked after import sets its own
    if not spec:
        return
    point, n, what = spec.split(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] != int(n):
        return
    if what == "HOLD":
        _hold(os.environ["NIN_FAULT_GATE"])
        return
    if what.startswith("PAUSE"):
        time.sleep(float(what.removeprefix("PAUSE")))
        return
    if what.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, what))
        time.sleep(0.5)  # a Python handler (SIGTERM, SIGINT) runs here, at this point
        return
    code = getattr(errno, what)
    raise OSError(code, os.strerror(code))


def _hold(gate: str) -> None:
    go = os.path.join(gate, "go")
    if os.path.exists(go):
        return
    with open(os.path.join(gate, f"held.{os.getpid()}"), "w"):
        pass
    while not os.path.exists(go):
        time.sleep(0.02)
