"""Time a full within + across ABX (MFCC, 10-minute demo corpus): ours vs zerospeech-libriabx2.

    python benchmarks/bench_abx.py [--minutes 10] [--device cpu] [--ref-dir /tmp/refabx/site]

Both run on the same float32 features and item file with the same settings: every token of
every group (the reference's sampling switched off), so the two scores must agree; the
reference is also timed with its own defaults (max 10 tokens per group, 5 X speakers), for
which ours is timed with the same caps. Both are timed best of --repeats; the reference's
time is its own evaluation (reading its .npy files included, our writing of them not). The
reference is installed into --ref-dir on first use (see make_abx_fixture.py); without it, only
our time is printed. Target: >= 10x faster.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_abx_fixture import ensure_reference, make_corpus, mfcc_features, run_reference  # noqa: E402

from hubertlab.evaluate.abx import AbxConfig, abx_scores  # noqa: E402


def _time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/hubertlab-bench-abx"))
    parser.add_argument("--ref-dir", type=Path, default=Path("/tmp/refabx/site"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="best of N, for both")
    args = parser.parse_args(argv)

    corpus = args.corpus / f"demo-{args.minutes:g}min-seed{args.seed}"
    if not (corpus / "abx.item").is_file():
        make_corpus(corpus, args.minutes, args.seed)
    item = corpus / "abx.item"
    features = mfcc_features(corpus)
    frames = sum(len(f) for f in features.values())
    print(f"corpus: {corpus} ({frames / 6000:.1f} min, {len(features)} files, MFCC 39-d 100 Hz)")
    print(f"threads: {torch.get_num_threads()}, device: {args.device}")

    full = AbxConfig(frame_shift_s=0.01, device=args.device)
    capped = AbxConfig(
        frame_shift_s=0.01, device=args.device, max_tokens_per_group=10, max_x_speakers=5
    )
    ours_s, ours = _time(lambda: abx_scores(features, item, full), args.repeats)
    ours_capped_s, ours_capped = _time(lambda: abx_scores(features, item, capped), args.repeats)
    for name, res, seconds in (
        ("all tokens", ours, ours_s),
        ("caps 10/5", ours_capped, ours_capped_s),
    ):
        w, a = res["within"], res["across"]
        print(
            f"ours ({name}): {seconds:.2f} s  within {w.error_percent:.3f}% "
            f"({w.num_triplets} triplets, {w.num_cells} cells)  across {a.error_percent:.3f}% "
            f"({a.num_triplets} triplets, {a.num_cells} cells)"
        )

    if not ensure_reference(args.ref_dir):
        print(f"reference zerospeech-libriabx2 unavailable in {args.ref_dir}: only ours timed")
        return 0

    def reference_seconds(**caps) -> tuple[float, dict[str, float]]:
        """Best of --repeats, like ours; the reference's own work only (see run_reference)."""
        best, scores = float("inf"), {}
        for _ in range(args.repeats):
            timing: dict[str, float] = {}
            with contextlib.redirect_stdout(io.StringIO()):
                scores = run_reference(features, item, 0.01, timing=timing, **caps)
            best = min(best, timing["seconds"])
        return best, scores

    ref_s, ref = reference_seconds()
    ref_capped_s, ref_capped = reference_seconds(max_size_group=10, max_x_across=5)
    print(
        f"reference (all tokens): {ref_s:.2f} s  within {ref['within']:.3f}%  "
        f"across {ref['across']:.3f}%"
    )
    print(
        f"reference (defaults 10/5): {ref_capped_s:.2f} s  within {ref_capped['within']:.3f}%  "
        f"across {ref_capped['across']:.3f}%"
    )
    diff = max(abs(ours[m].error_percent - ref[m]) for m in ("within", "across"))
    print(f"max |ours - reference| (all tokens): {diff:.4f} points")
    print(f"speed-up, all tokens: {ref_s / ours_s:.1f}x")
    print(
        f"speed-up, reference defaults vs ours with the same caps: "
        f"{ref_capped_s / ours_capped_s:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
