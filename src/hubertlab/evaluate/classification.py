"""Voice type classification scores: per-class detection precision, recall and F1 with
pyannote.metrics (collar 0, overlap kept) accumulated over a set of files, and their macro
mean (the VTC papers' figure).

A class with neither reference nor hypothesis speech in the scored regions has no score
(precision, recall and F1 are 0 / 0: pyannote-style scorers report it as undefined); it is
left out of the macro mean instead of counting as a perfect 100 %, and a set where every
class is absent has no score at all."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hubertlab.data.rttm import Turn
from hubertlab.fileio import atomic_write_json, atomic_write_text, save_figure
from hubertlab.finetune.f1 import macro_mean

log = logging.getLogger(__name__)

UNDEFINED_NOTE = (
    "undefined: no reference and no hypothesis speech of the class in the scored regions; "
    "left out of the macro mean"
)


@dataclass(frozen=True)
class ClassScore:
    """Scores of one class; precision, recall and f1 are None when it is absent (undefined)."""

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    reference_s: float  # seconds of reference speech of this class (scored regions)
    hypothesis_s: float

    @property
    def defined(self) -> bool:
        return self.f1 is not None


def _annotation(turns: Sequence[Turn], label: str):
    from pyannote.core import Annotation, Segment  # lazy: optional (hubertlab[finetune])

    annotation = Annotation()
    for i, t in enumerate(turns):
        if t.label == label and t.duration_s > 0:
            annotation[Segment(t.onset_s, t.offset_s), i] = label
    return annotation


def _uem_timeline(regions: Sequence[tuple[float, float]]):
    from pyannote.core import Segment, Timeline  # lazy: optional (hubertlab[finetune])

    return Timeline([Segment(a, b) for a, b in regions]).support()


def detection_scores(
    reference: Mapping[str, Sequence[Turn]],
    hypothesis: Mapping[str, Sequence[Turn]],
    classes: Sequence[str],
    *,
    uem: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> list[ClassScore]:
    """Scores per class over the files of the reference (or of the UEM when given: then every
    reference file needs regions); a file without hypothesis turns counts as all missed.
    Without UEM a file is scored from 0 to the end of its last reference or hypothesis turn,
    the same region for every class."""
    try:  # lazy: pyannote.metrics is optional (hubertlab[finetune]); its absence is explained
        from pyannote.metrics.detection import DetectionPrecisionRecallFMeasure
    except ImportError as e:
        raise ImportError(
            "VTC scoring needs pyannote.metrics: pip install 'hubertlab[finetune]'"
        ) from e
    files = sorted(uem) if uem is not None else sorted(reference)
    stray = sorted(set(hypothesis) - set(files))
    if stray:
        raise ValueError(
            f"{len(stray)} hypothesis files are not in the reference"
            f"{' or UEM' if uem is not None else ''}, e.g. {stray[0]!r}"
        )
    if not files:
        raise ValueError("no files to score: the reference (and UEM) is empty")
    unscored = sorted(set(reference) - set(files))
    if unscored:
        raise ValueError(
            f"{len(unscored)} reference files have no UEM regions, e.g. {unscored[0]!r}"
        )
    if uem is not None:
        _warn_empty_regions(reference, hypothesis, uem)
    scores = []
    for label in classes:
        metric = DetectionPrecisionRecallFMeasure(collar=0.0, skip_overlap=False)
        ref_s = hyp_s = 0.0
        for fileid in files:
            ref_turns, hyp_turns = reference.get(fileid, ()), hypothesis.get(fileid, ())
            if uem is not None:
                regions = uem[fileid]
            else:
                end = max((t.offset_s for t in (*ref_turns, *hyp_turns)), default=0.0)
                if end <= 0:
                    continue
                regions = [(0.0, end)]
            timeline = _uem_timeline(regions)
            ref, hyp = _annotation(ref_turns, label), _annotation(hyp_turns, label)
            metric(ref, hyp, uem=timeline)
            ref_s += ref.crop(timeline).get_timeline().support().duration()
            hyp_s += hyp.crop(timeline).get_timeline().support().duration()
        if ref_s <= 0 and hyp_s <= 0:  # 0 / 0: pyannote would call it a perfect 1.0
            scores.append(ClassScore(label, None, None, None, 0.0, 0.0))
            continue
        precision, recall, f1 = metric.compute_metrics()
        scores.append(ClassScore(label, float(precision), float(recall), float(f1), ref_s, hyp_s))
    return scores


def _warn_empty_regions(
    reference: Mapping[str, Sequence[Turn]],
    hypothesis: Mapping[str, Sequence[Turn]],
    uem: Mapping[str, Sequence[tuple[float, float]]],
) -> None:
    """A warning for each file whose scored regions hold no reference or hypothesis turn:
    regions outside the audio (another UEM, seconds vs frames) score nothing there."""
    for fileid, regions in sorted(uem.items()):
        turns = (*reference.get(fileid, ()), *hypothesis.get(fileid, ()))
        if not any(t.onset_s < b and t.offset_s > a for t in turns for a, b in regions):
            log.warning(
                "%s: no reference or hypothesis speech in its %d UEM regions (%.1f-%.1f s): "
                "nothing is scored there", fileid, len(regions), regions[0][0], regions[-1][1],
            )  # fmt: skip


def macro_f1(scores: Sequence[ClassScore]) -> float:
    """Mean F1 of the classes that have a score (absent classes are left out); a set where
    every class is absent is an error, not a score."""
    mean = macro_mean(s.f1 for s in scores)
    if mean is None:
        raise ValueError(
            "no class has reference or hypothesis speech in the scored regions: nothing to score"
        )
    return mean


def _percent(value: float | None) -> str:
    return "undefined" if value is None else f"{100 * value:.1f}"


def format_detection_table(scores: Sequence[ClassScore]) -> str:
    """Markdown table: one row per class and the macro mean (percent); absent classes are
    marked undefined and the macro row says how many classes it averages."""
    lines = [
        "| class | F1 (%) | precision (%) | recall (%) | reference (s) | hypothesis (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.label} | {_percent(s.f1)} | {_percent(s.precision)} | {_percent(s.recall)} "
            f"| {s.reference_s:.1f} | {s.hypothesis_s:.1f} |"
        )
    defined = sum(s.defined for s in scores)
    macro = "**macro**" if defined == len(scores) else f"**macro** ({defined} of {len(scores)})"
    lines.append(f"| {macro} | **{100 * macro_f1(scores):.1f}** | | | | |")
    if defined < len(scores):
        lines += ["", f"{UNDEFINED_NOTE}."]
    return "\n".join(lines) + "\n"


def _plot_f1(scores: Sequence[ClassScore], path: Path) -> None:
    import matplotlib  # lazy: slow to import; only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    names = [s.label for s in scores] + ["macro"]
    values = [100 * (s.f1 or 0.0) for s in scores] + [100 * macro_f1(scores)]
    labels = [_percent(s.f1) for s in scores] + [_percent(macro_f1(scores))]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 1.5, 3.2))
    bars = ax.bar(names, values, color=["C0"] * len(scores) + ["C1"])
    ax.bar_label(bars, labels=labels)
    ax.set_ylim(0, 112)
    ax.set_ylabel("detection F1 (%)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_detection_report(
    scores: Sequence[ClassScore], out_dir: str | Path, *, source: Mapping[str, str] | None = None
) -> None:
    """vtc_scores.json, vtc_scores.md (table) and vtc_f1.png (F1 bars) in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "source": dict(source or {}),
        "collar_s": 0.0,
        "classes": [asdict(s) for s in scores],  # absent classes: null scores
        "macro_f1": macro_f1(scores),
        "macro_classes": [s.label for s in scores if s.defined],
    }
    atomic_write_json(out_dir / "vtc_scores.json", report)
    atomic_write_text(out_dir / "vtc_scores.md", format_detection_table(scores))
    _plot_f1(scores, out_dir / "vtc_f1.png")
