"""Named fault points for the records tests: `NIN_FAULT=point:n:what` makes this process fail at
the n-th time it passes `point`, as a crash would at that moment.

`what` is a signal name (SIGKILL, SIGTERM, SIGINT: sent to this process), an errno name
(ENOSPC, EROFS: raised as that OSError), or PAUSE<seconds>: the process stops there that long, a
deterministic window in which a test acts on a run mid-training (kills, requeues, cancels) without
racing it. Unset, a fault point costs one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter

_SPEC = os.environ.get("NIN_FAULT", "")
_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    if not _SPEC:
        return
    point, n, what = _SPEC.split(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] != int(n):
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
