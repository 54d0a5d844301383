"""How many actors each pool started: a Ray actor (no CPU) the pools' actors report their start to.

A module of its own, importing nothing heavy: the actor's process loads only this file, not the stages
(torch, the models), so counting costs the job no extra start-up.
"""

from __future__ import annotations


class ActorStarts:
    """``report.json``'s ``actors_started``: every pool actor calls ``started(pool)`` once, from its constructor."""

    def __init__(self):
        self.starts: dict[str, int] = {}

    def started(self, pool: str) -> None:
        self.starts[pool] = self.starts.get(pool, 0) + 1

    def counts(self) -> dict[str, int]:
        return dict(self.starts)
