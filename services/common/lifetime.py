"""Child processes that never outlive their parent (Linux ``PR_SET_PDEATHSIG``).

Two kinds of children need it: the local launcher's service processes (an orphaned server
keeps its port after ``make run`` is killed) and the retrieve service's index builders (a
build nobody will swap in is wasted CPU). Only the standard library is imported, so a child
that calls this first starts cheaply.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(
    sent: signal.Signals = signal.SIGTERM,
    *,
    expected_parent: int | None = None,
    own_process_group: bool = False,
) -> None:
    """Ask the kernel to send ``sent`` to this process when its parent dies.

    ``own_process_group`` moves the child out of the parent's group first, so a Ctrl-C at the
    terminal reaches the parent alone and the parent decides the order of shutdown.
    ``expected_parent`` closes the race in which the parent died before the request took
    effect: the process then exits at once with status 3.
    """
    if own_process_group:
        os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sent)
    if expected_parent is not None and os.getppid() != expected_parent:
        raise SystemExit(3)
