"""Speech recognition scores with jiwer: corpus WER and CER (errors over reference words or
characters), and WER per utterance-length bucket (reference words)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hubertlab.fileio import atomic_write_json, atomic_write_text, save_figure

log = logging.getLogger(__name__)

# Upper bounds (inclusive) of the length buckets, in reference words; the last is open.
DEFAULT_BUCKETS = (5, 10, 20)


@dataclass(frozen=True)
class ErrorRate:
    name: str  # "all" or a bucket like "6-10 words"
    utterances: int
    words: int
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int


def _bucket_names(bounds: Sequence[int]) -> list[str]:
    names, low = [], 1
    for high in bounds:
        names.append(f"{low}-{high} words")
        low = high + 1
    return [*names, f"{low}+ words"]


def _rate(name: str, refs: list[str], hyps: list[str]) -> ErrorRate:
    import jiwer  # lazy: optional (hubertlab[finetune]), checked by error_rates

    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return ErrorRate(
        name=name,
        utterances=len(refs),
        words=sum(len(r.split()) for r in refs),
        wer=float(words.wer),
        cer=float(chars.cer),
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
    )


def error_rates(
    reference: Mapping[str, str],
    hypothesis: Mapping[str, str],
    *,
    normalize: Callable[[str], str] | None = None,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
) -> list[ErrorRate]:
    """[all, bucket 1, ...]: utterances of the reference; a missing hypothesis is scored as
    empty (all deletions), a hypothesis of an unknown fileid is an error. Utterances whose
    reference is empty after normalization are left out (WER is undefined there)."""
    try:
        import jiwer  # noqa: F401  # lazy: optional (hubertlab[finetune]); absence explained
    except ImportError as e:
        raise ImportError("ASR scoring needs jiwer: pip install 'hubertlab[finetune]'") from e
    stray = sorted(set(hypothesis) - set(reference))
    if stray:
        raise ValueError(
            f"{len(stray)} hypothesis fileids are not in the reference, e.g. {stray[0]!r}"
        )
    norm = normalize or (lambda s: " ".join(s.split()))
    missing = [f for f in reference if f not in hypothesis]
    if missing:
        log.warning("%d utterances have no hypothesis (scored as empty)", len(missing))
    pairs = [(norm(reference[f]), norm(hypothesis.get(f, ""))) for f in reference]
    pairs = [p for p in pairs if p[0]]
    if not pairs:
        raise ValueError("no utterance with a non-empty reference to score")
    names = _bucket_names(buckets)
    by_bucket: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for ref, hyp in pairs:
        n = len(ref.split())
        k = next((i for i, high in enumerate(buckets) if n <= high), len(buckets))
        by_bucket[names[k]].append((ref, hyp))
    rates = [_rate("all", [r for r, _ in pairs], [h for _, h in pairs])]
    for name, items in by_bucket.items():
        if items:
            rates.append(_rate(name, [r for r, _ in items], [h for _, h in items]))
    return rates


def format_error_table(rates: Sequence[ErrorRate]) -> str:
    lines = [
        "| utterances | count | words | WER (%) | CER (%) | sub | del | ins |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rates:
        lines.append(
            f"| {r.name} | {r.utterances} | {r.words} | {100 * r.wer:.1f} | {100 * r.cer:.1f} "
            f"| {r.substitutions} | {r.deletions} | {r.insertions} |"
        )
    return "\n".join(lines) + "\n"


def _plot_buckets(rates: Sequence[ErrorRate], path: Path) -> None:
    import matplotlib  # lazy: slow to import; only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    buckets = [r for r in rates if r.name != "all"]
    x = np.arange(len(buckets))
    fig, ax = plt.subplots(figsize=(1.4 * len(buckets) + 2, 3.2))
    ax.bar(x - 0.2, [100 * r.wer for r in buckets], 0.4, label="WER")
    ax.bar(x + 0.2, [100 * r.cer for r in buckets], 0.4, label="CER")
    ax.axhline(100 * rates[0].wer, color="C0", linestyle="--", linewidth=1, label="WER, all")
    ax.set_xticks(x, [f"{r.name}\n({r.utterances} utt.)" for r in buckets])
    ax.set_ylabel("error rate (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_asr_report(
    rates: Sequence[ErrorRate], out_dir: str | Path, *, source: Mapping[str, str] | None = None
) -> None:
    """asr_scores.json, asr_scores.md (table) and asr_wer_by_length.png in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"source": dict(source or {}), "rates": [asdict(r) for r in rates]}
    atomic_write_json(out_dir / "asr_scores.json", report)
    atomic_write_text(out_dir / "asr_scores.md", format_error_table(rates))
    _plot_buckets(rates, out_dir / "asr_wer_by_length.png")
