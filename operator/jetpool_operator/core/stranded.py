"""Which tasks a sweep may dead-letter as stranded (delivered ``maxDeliver`` times, never
answered), judged from the consumer's state alone.

The server announces a task that reaches ``maxDeliver`` once, as a core-NATS advisory; one sent
while no operator runs is lost, and the task then sits in the WorkQueue stream forever, never
delivered again. Its trace: it is still in the stream (an ack or term would have removed it),
its sequence is at or below the consumer's delivered stream sequence, and it is not
ack-pending. The consumer reports how many messages are ack-pending but not which, so a sweep
is sound only when that count is zero: then every such message is stranded. A pool reaches
that state whenever it is idle, which is when stranded tasks are otherwise never looked at.
(The server gives a task up only when it next tries to deliver, i.e. on a worker's pull; until
then the task still counts as ack-pending, and neither the advisory nor a sweep sees it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SWEEP_INTERVAL_SECONDS = 60.0
"""A pool's stream is swept on the operator's first tick and then this often."""
SWEEP_LIMIT = 100
"""Tasks moved per sweep at most, so one sweep stays inside a tick's NATS budget."""


@dataclass(frozen=True, slots=True)
class SweepPlan:
    up_to_sequence: int
    """Stream sequences at or below this were delivered to the consumer."""
    subjects: tuple[str, ...]
    """The consumer's filter subjects (``>`` when it has none): only these were delivered."""


def sweep_plan(
    ack_pending: int, delivered_stream_sequence: int, filter_subjects: Sequence[str]
) -> SweepPlan | None:
    """What to sweep now, or None when a message below the delivered sequence might still be
    in flight (or nothing was delivered yet)."""
    if ack_pending > 0 or delivered_stream_sequence <= 0:
        return None
    return SweepPlan(delivered_stream_sequence, tuple(filter_subjects) or (">",))
