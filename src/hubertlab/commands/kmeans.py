"""hubertlab kmeans STORE OUT --k 100 [--fraction 0.1] [--seed 0] [--max-memory-gb 1]"""

from __future__ import annotations

import argparse

from hubertlab.commands.args import ranged_float
from hubertlab.units.kmeans import fit_kmeans


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Finite here (NaN passes fit_kmeans's comparisons); fit_kmeans refuses the out-of-range.
    finite = ranged_float()
    p.add_argument("store", help="feature store folder (from `hubertlab features`)")
    p.add_argument("out", help="folder for centroids.npy + kmeans.json")
    p.add_argument("--k", type=int, default=100, help="number of clusters")
    p.add_argument("--fraction", type=finite, default=0.1, help="share of utterances to fit on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-memory-gb", type=finite, default=1.0, help="bound on the fit buffer")
    p.add_argument("--max-frames", type=int, help="at most this many frames in the fit")
    p.add_argument("--max-iter", type=int, default=100, help="Lloyd iterations at most")
    p.add_argument("--tol", type=finite, default=1e-3, help="stop below this relative gain")
    p.add_argument("--device", help="cpu (faiss) or a torch device (default: cuda if any)")


def run(args: argparse.Namespace) -> int:
    model = fit_kmeans(
        args.store, args.k, fraction=args.fraction, seed=args.seed,
        max_memory_gb=args.max_memory_gb, max_frames=args.max_frames, max_iter=args.max_iter,
        tol=args.tol, device=args.device,
    )  # fmt: skip
    out = model.save(args.out)
    m = model.meta
    print(
        f"k={model.k} fitted on {m['fitted_on_frames']} frames of {m['fitted_on_utterances']} "
        f"utterances, inertia/frame {m['inertia_per_frame']:.4g}, {m['iterations']} "
        f"iterations, {m['seconds']} s -> {out}"
    )
    return 0
