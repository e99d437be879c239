"""Control state the operator publishes per pool and every worker obeys (circuit breaker).

Stored in the KV bucket :data:`~jetpool_protocol.naming.CONTROL_BUCKET` under the pool's
control key. Workers watch the key, so a trip reaches every worker in well under a second.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class BreakerState(StrEnum):
    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class ControlState(BaseModel):
    """What a worker of the pool may do right now.

    * ``Closed``: fetch normally.
    * ``Open``: fetch nothing; in-flight tasks finish.
    * ``HalfOpen``: only ``trial_worker`` fetches, and at most ``trial_tasks`` tasks in total
      for this ``epoch``; everyone else behaves as Open.
    """

    model_config = ConfigDict(frozen=True)

    breaker: BreakerState = BreakerState.CLOSED
    since: datetime | None = None
    reason: str = ""
    epoch: int = 0
    """Increments on every transition so workers reset per-state counters."""
    trial_worker: str | None = None
    trial_tasks: int = 0

    def may_fetch(self, worker: str) -> bool:
        if self.breaker is BreakerState.CLOSED:
            return True
        if self.breaker is BreakerState.HALF_OPEN:
            return worker == self.trial_worker
        return False
