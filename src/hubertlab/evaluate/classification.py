"""Voice type classification scores: per-class detection precision, recall and F1 with
pyannote.metrics (collar 0, overlap kept) accumulated over a set of files, and their macro
mean (the VTC papers' figure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hubertlab.fileio import atomic_write_json, atomic_write_text, save_figure
from hubertlab.finetune.rttm import Turn


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float
    recall: float
    f1: float
    reference_s: float  # seconds of reference speech of this class (scored regions)
    hypothesis_s: float


def _annotation(turns: Sequence[Turn], label: str):
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for i, t in enumerate(turns):
        if t.label == label and t.duration_s > 0:
            annotation[Segment(t.onset_s, t.offset_s), i] = label
    return annotation


def _uem_timeline(regions: Sequence[tuple[float, float]]):
    from pyannote.core import Segment, Timeline

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
    try:
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
        precision, recall, f1 = metric.compute_metrics()
        scores.append(ClassScore(label, float(precision), float(recall), float(f1), ref_s, hyp_s))
    return scores


def macro_f1(scores: Sequence[ClassScore]) -> float:
    return sum(s.f1 for s in scores) / len(scores)


def format_detection_table(scores: Sequence[ClassScore]) -> str:
    """Markdown table: one row per class and the macro mean (percent)."""
    lines = [
        "| class | F1 (%) | precision (%) | recall (%) | reference (s) | hypothesis (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.label} | {100 * s.f1:.1f} | {100 * s.precision:.1f} | {100 * s.recall:.1f} "
            f"| {s.reference_s:.1f} | {s.hypothesis_s:.1f} |"
        )
    lines.append(f"| **macro** | **{100 * macro_f1(scores):.1f}** | | | | |")
    return "\n".join(lines) + "\n"


def _plot_f1(scores: Sequence[ClassScore], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.label for s in scores] + ["macro"]
    values = [100 * s.f1 for s in scores] + [100 * macro_f1(scores)]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 1.5, 3.2))
    bars = ax.bar(names, values, color=["C0"] * len(scores) + ["C1"])
    ax.bar_label(bars, fmt="%.1f")
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
        "classes": [asdict(s) for s in scores],
        "macro_f1": macro_f1(scores),
    }
    atomic_write_json(out_dir / "vtc_scores.json", report)
    atomic_write_text(out_dir / "vtc_scores.md", format_detection_table(scores))
    _plot_f1(scores, out_dir / "vtc_f1.png")
