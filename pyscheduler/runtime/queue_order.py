"""The order a worker asks its queues in: as given, or by smooth weighted round-robin.

Queues are taken in the order given: a queue is asked only when the ones before it had
nothing ready. With weights ({queue name: weight}), the order changes each turn, so a
backed-up queue of weight 3 gets about three turns at the front for every one of a queue of
weight 1, and no queue is starved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..client.queue import Queue


def check_weights(queues: Sequence[Queue], weights: Mapping[str, int] | None) -> dict[str, int]:
    """{queue name: weight} for every queue (1 when not given); {} without weights."""
    if not weights:
        return {}
    names = {q.name for q in queues}
    for name, weight in weights.items():
        if name not in names:
            raise ValueError(f"weight given for {name!r}, which this worker does not take")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"the weight of {name!r} must be a positive integer")
    return {q.name: weights.get(q.name, 1) for q in queues}


class QueueOrder:
    def __init__(self, queues: Sequence[Queue], weights: Mapping[str, int] | None) -> None:
        self.queues = list(queues)
        self.weights = check_weights(queues, weights)
        self.total = sum(self.weights.values())
        self._turns = dict.fromkeys(self.weights, 0)

    def share(self, queue: Queue, wanted: int) -> int:
        """The part of `wanted` prefetched jobs this queue may fill (all without weights)."""
        if not self.weights:
            return wanted
        return -(-wanted * self.weights[queue.name] // self.total)

    def next_turn(self) -> list[Queue]:
        """The queues in the order to ask them this turn."""
        if not self.weights:
            return self.queues
        for name, weight in self.weights.items():
            self._turns[name] += weight
        first = max(self.queues, key=lambda q: self._turns[q.name])
        self._turns[first.name] -= self.total
        rest = sorted(
            (q for q in self.queues if q is not first),
            key=lambda q: self._turns[q.name],
            reverse=True,
        )
        return [first, *rest]
