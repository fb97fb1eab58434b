"""What `hubertlab init` is told (InitOptions) and what it measures (CorpusStats)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubertlab.demo.corpus import DemoCorpusConfig
from hubertlab.init.sizing import Hardware
from hubertlab.tasks import DEFAULT_KIND, PRETRAINING_KINDS

EVAL_LANGUAGES = ("en", "fr", "es")  # the demo's


@dataclass(frozen=True)
class InitOptions:
    """The command line of `hubertlab init`, checked where it is used."""

    model: str = DEFAULT_KIND
    hardware: Hardware = Hardware()
    init_from: Path | None = None
    steps: int | None = None  # iteration 1's steps instead of the sized ones
    eval_demo: bool = False  # add the synthetic evaluation corpus
    eval_languages: tuple[str, ...] = EVAL_LANGUAGES
    eval_minutes: float = 10.0  # the demo's
    long_form: bool = False
    # The UPS selection of the long-form path: an hour budget of 10 s chunks, and optional
    # language-ID results that weight scarce languages (hubertlab.curate.select).
    ups_hours: float | None = None
    lid: Path | None = None
    shards: int = 0  # long-form path: each iteration streams its spans from this many tars
    seed: int = 0
    # On a CPU, time a few training steps here for the estimate (off: the reference machine's).
    measure_step: bool = True

    def __post_init__(self) -> None:
        # Checked before anything is scanned or written.
        if self.model not in PRETRAINING_KINDS:
            known = ", ".join(PRETRAINING_KINDS)
            raise ValueError(f"--model must be one of {known}, got {self.model!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps: must be >= 1, got {self.steps}")
        if self.ups_hours is not None and not (0 < self.ups_hours < float("inf")):
            raise ValueError(f"--hours: must be a number > 0, got {self.ups_hours}")
        if self.shards < 0:
            raise ValueError(f"--shards: must be >= 0, got {self.shards}")
        if self.lid is not None and self.ups_hours is None:
            raise ValueError("--lid: language-ID results weight the UPS selection: give --hours")
        if self.eval_demo:
            try:
                DemoCorpusConfig(minutes=self.eval_minutes, languages=self.eval_languages)
            except ValueError as e:
                raise ValueError(f"--eval demo: {e}") from None


@dataclass(frozen=True)
class CorpusStats:
    """Files and lengths of the scanned corpus (hours, seconds)."""

    num_files: int
    hours: float
    median_seconds: float
    shortest_seconds: float
    longest_seconds: float
