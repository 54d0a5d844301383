"""This run's failed samples (the infrastructure said no): attempts, counts, the circuit breaker.

A failed sample is never committed; it is planned again in a later round, at most
``factory.max_attempts`` tries per run, and when one stage fails a large share of the latest
samples the job stops with ``StageFailingError`` — no source is used up, and the same command
resumes once the cause is fixed.

A VLM answer that does not follow its JSON schema is data (the sample is committed as rejected,
``vlm_invalid_answer``), but a server that degrades mid-run answers that way for every sample: the
breaker counts such samples in its window like failures of a stage ``vlm answers``, so once they
dominate a window the job stops with one line, while an occasional invalid answer stays a rejection.
At most one window of them is committed before the stop.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from factory.config import FactoryConfig
from shards.record import Sample


class StageFailingError(RuntimeError):
    """A stage keeps failing (infrastructure or a bug); the message is the one line to show."""


INVALID_ANSWERS = "vlm answers"  # the breaker's name for samples rejected for an invalid VLM answer


def invalid_vlm_answer(sample: Sample) -> bool:
    """Rejected because a VLM answer did not follow its schema (the description's, or any verdict's of the image)."""
    return sample.status == "rejected" and "vlm_invalid_answer" in sample.reject_reason


@dataclass
class Failures:
    """This run's failed samples: attempts per sample, counts per stage and error, the breaker.

    The breaker watches the latest ``breaker_window`` samples that came back (finished or failed):
    once one stage failed at least ``breaker_min_failures`` of them and at least
    ``breaker_failure_share`` of the window, the job must stop.
    """

    policy: FactoryConfig
    attempts: Counter = field(default_factory=Counter)  # sample_id -> failed tries this run
    counts: Counter = field(default_factory=Counter)  # (stage, error type) -> failures this run
    first_error: dict[str, str] = field(default_factory=dict)  # stage -> first "Type: message"
    window: deque = field(default_factory=deque)  # failing stage, or None for a finished sample

    def record(self, sample: Sample) -> dict[str, Any]:
        """Count one failed sample; return its ``errors.jsonl`` entry."""
        stage, kind = sample.failure.get("stage", "unknown"), sample.failure.get("type", "Error")
        self.attempts[sample.sample_id] += 1
        self.counts[(stage, kind)] += 1
        self.first_error.setdefault(stage, f"{kind}: {sample.failure.get('message', '')}"[:300])
        self._observe(stage)
        return {"sample_id": sample.sample_id, "source_id": sample.source_id, "seed": sample.seed,
                "attempt": self.attempts[sample.sample_id], **sample.failure}

    def finished(self, sample: Sample | None = None) -> None:
        """Count one committed sample: a rejection for an invalid VLM answer counts against ``vlm answers``."""
        if sample is not None and invalid_vlm_answer(sample):
            model = sample.provenance.get("models", {}).get("vlm", "?")
            self.first_error.setdefault(INVALID_ANSWERS, f"{sample.reject_reason[:240]} from model {model}")
            self._observe(INVALID_ANSWERS)
        else:
            self._observe(None)

    def _observe(self, stage: str | None) -> None:
        self.window.append(stage)
        while len(self.window) > self.policy.breaker_window:
            self.window.popleft()

    def given_up(self) -> set[str]:
        """Samples that failed ``max_attempts`` times: not planned again in this run (nor committed)."""
        return {sid for sid, k in self.attempts.items() if k >= self.policy.max_attempts}

    def tripped(self) -> str | None:
        """The one-line reason to stop, when a stage fails too much of the latest samples."""
        failing = Counter(stage for stage in self.window if stage is not None)
        for stage, count in failing.most_common(1):
            if count >= self.policy.breaker_min_failures and count >= self.policy.breaker_failure_share * len(self.window):
                return self.describe(stage, f"{count} of the latest {len(self.window)} samples")
        return None

    def describe(self, stage: str, how_many: str) -> str:
        if stage == INVALID_ANSWERS:
            return (f"the VLM's answers did not follow their JSON schema in {how_many} (first: "
                    f"{self.first_error.get(stage, '?')}): the server ignores or lost response_format; use a "
                    "server that supports JSON-schema structured outputs (response_format), e.g. vLLM, then re-run "
                    "the same command to resume (those samples stay committed as rejected)")
        return (f"stage '{stage}' failed {how_many} (first error: {self.first_error.get(stage, '?')}); "
                "no source was used up: fix the cause and re-run the same command to resume "
                "(tracebacks in errors.jsonl)")

    def report(self) -> dict[str, Any]:
        by_stage: dict[str, dict[str, int]] = {}
        for (stage, kind), count in sorted(self.counts.items()):
            by_stage.setdefault(stage, {})[kind] = count
        return {"total": sum(self.counts.values()), "by_stage": by_stage, "samples": len(self.attempts),
                "given_up": len(self.given_up())}
