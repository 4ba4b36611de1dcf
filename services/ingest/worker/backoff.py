"""How long a job waits for an unavailable dependency before its next try, and when to give up.

An outage of embed or retrieve (a restart, a rolling deploy, a node lost) lasts seconds to
minutes; a file is not at fault for it. So a job that meets one waits, exponentially longer
each time up to a cap, for as long as an operator could plausibly take to bring the service
back (the give-up window), instead of failing after a few quick attempts. Bad input never
comes here: it fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.ingest.config import IngestSettings

# factor ** exponent overflows a float long before any sane number of tries; the cap wins anyway.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    first_s: float
    factor: float
    max_s: float
    give_up_s: float

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Backoff:
        return cls(
            settings.retry_backoff_s,
            settings.retry_backoff_factor,
            settings.retry_backoff_max_s,
            settings.retry_give_up_s,
        )

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1 for the first)."""
        exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
        return min(self.first_s * self.factor**exponent, self.max_s)

    def retries(self, most: int = 1000) -> int:
        """How many retries fit in the give-up window (for callers that count, not time)."""
        waited = 0.0
        for count in range(most):
            waited += self.delay(count + 1)
            if waited > self.give_up_s:
                return count
        return most
