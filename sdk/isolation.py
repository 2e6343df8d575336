"""Running suspect calls alone (the poison guard's attribution rule).

A worker that died while running several calls cannot say which one killed it, so none is
blamed: requeue.lua marks each of them ``suspect``. The worker that claims a suspect keeps it
held (heartbeated) but parked, stops claiming, lets what it runs finish, then runs the
suspect with nothing beside it; claiming resumes once that run ends. A death during such a
run has one culprit, so it counts (``deaths``) and a call that keeps killing its workers is
quarantined, while the calls that only shared a worker with it are never blamed.

Guarantee: while a suspect is parked or running, this worker claims nothing new; suspects
run one at a time.
"""

from __future__ import annotations

from lb.broker.records import Claimed

__all__ = ["Isolation"]


class Isolation:
    """Parked suspects of one worker (used on its event loop only)."""

    def __init__(self) -> None:
        self.parked: list[Claimed] = []
        self.running: str | None = None  # task id of the suspect running alone

    @property
    def blocks_claims(self) -> bool:
        return bool(self.parked) or self.running is not None

    def park(self, c: Claimed) -> None:
        self.parked.append(c)

    def next_alone(self, busy: int) -> Claimed | None:
        """The suspect to start now, if nothing else runs (``busy`` executions)."""
        if busy or self.running is not None or not self.parked:
            return None
        c = self.parked.pop(0)
        self.running = c.task_id
        return c

    def ended(self, task_id: str) -> None:
        if self.running == task_id:
            self.running = None

    def drop(self, task_id: str) -> Claimed | None:
        """Forget a parked suspect (lost, or released at stop)."""
        for i, c in enumerate(self.parked):
            if c.task_id == task_id:
                return self.parked.pop(i)
        return None
