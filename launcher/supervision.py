"""When the local launcher restarts a service process that exited, and how it counts restarts.

The launcher (``make run``, ``zhiku up``) supervises its children as Kubernetes supervises
containers with ``restartPolicy: Always``: whatever ended a process (a crash, the OOM killer,
``kill -9``), it is started again after a back-off that doubles with each exit in a row
(CrashLoopBackOff), so a process that dies at once every time costs a start every
``cap_s`` seconds instead of a busy loop. A process that stayed up ``stable_after_s``
starts a new streak at ``initial_s``. (Kubernetes: 10 s doubling to 5 min, reset after
10 min; one machine under a person's eyes wants a faster first retry.)
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

RESTARTS = Counter(
    "zhiku_stack_restarts_total",
    "Service processes the local launcher started again after they exited",
    ["service"],
)


@dataclass(frozen=True)
class RestartBackoff:
    """Exponential back-off between restarts of one process: ``initial_s``, doubling
    (``factor``) up to ``cap_s``; a run of ``stable_after_s`` or longer resets it."""

    initial_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 30.0
    stable_after_s: float = 60.0

    def delay(self, streak: int) -> float:
        """Seconds before restart number ``streak`` (1 = first) of a run of quick exits."""
        if streak < 1:
            raise ValueError(f"streak counts from 1, got {streak}")
        delay = self.initial_s
        for _ in range(streak - 1):
            delay *= self.factor
            if delay >= self.cap_s:
                break
        return min(delay, self.cap_s)


@dataclass
class RestartRecord:
    """One child's restarts: the total (for logs and the metric) and the current streak."""

    backoff: RestartBackoff
    total: int = 0
    streak: int = 0

    def exited(self, uptime_s: float) -> float:
        """Record an exit after ``uptime_s`` seconds up; returns the delay before the restart."""
        if uptime_s >= self.backoff.stable_after_s:
            self.streak = 0
        self.streak += 1
        return self.backoff.delay(self.streak)
