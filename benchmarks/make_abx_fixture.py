"""Regenerate tests/assets/abx/: demo-corpus MFCC features + zerospeech-libriabx2's ABX scores.

The reference (PyPI zerospeech-libriabx2) cannot be a test dependency (its metadata wants a newer
Python, it compiles a Cython DTW and imports torchaudio), so this script installs it once into a
scratch folder outside the repository, runs it on the demo corpus's MFCC features, and freezes
both the features and its numbers; tests/test_abx.py recomputes our ABX from the frozen features.

    python benchmarks/make_abx_fixture.py            # writes tests/assets/abx/
    python benchmarks/make_abx_fixture.py --minutes 3 --seed 1 --ref-dir /tmp/refabx

The reference runs with its sampling switched off (max_size_group and max_x_across huge), which
makes it deterministic and equal to our default; its numbers with its own defaults (10, 5) are
stored too, for information.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets" / "abx"
REFERENCE_PACKAGE = "zerospeech-libriabx2==0.9.8"
NO_SAMPLING = 1_000_000


def ensure_reference(ref_dir: Path) -> bool:
    """Make zerospeech-libriabx2 importable from ref_dir, installing it there if needed."""
    ref_dir = Path(ref_dir)
    if not any(ref_dir.glob("libri_light_dtw*")):
        print(f"installing {REFERENCE_PACKAGE} into {ref_dir} ...", file=sys.stderr)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--ignore-requires-python",
            "--target",
            str(ref_dir),
            REFERENCE_PACKAGE,
        ]
        if subprocess.run(cmd, check=False).returncode != 0:
            return False
    sys.path.insert(0, str(ref_dir))
    # Imported by the reference's CLI module and CPC code, unused for precomputed features.
    for name in ("torchaudio", "pandas", "tqdm"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        import zrc_abx2.eval_ABX  # noqa: F401
    except ImportError as e:
        print(f"reference unavailable: {e}", file=sys.stderr)
        return False
    return True


def run_reference(
    features: dict[str, np.ndarray],
    item_file: Path,
    frame_shift_s: float,
    *,
    max_size_group: int = NO_SAMPLING,
    max_x_across: int = NO_SAMPLING,
    timing: dict[str, float] | None = None,
) -> dict[str, float]:
    """The reference's within-context ABX in percent: {"within": .., "across": ..}.

    `timing["seconds"]`, when given, receives the time of the reference's own evaluation
    (reading its .npy files and item file included; our writing of them excluded)."""
    from zrc_abx2.eval_ABX import EvalABX, EvalArgs

    with tempfile.TemporaryDirectory() as tmp:
        # The reference names files by their stem: flatten "speaker/utt" ids.
        flat = {fileid: fileid.replace("/", "__") for fileid in features}
        for fileid, frames in features.items():
            np.save(Path(tmp) / f"{flat[fileid]}.npy", np.asarray(frames, dtype=np.float32))
        lines = Path(item_file).read_text().splitlines()
        rows = [lines[0]]
        for line in lines[1:]:
            cols = line.split()
            if cols:
                rows.append(" ".join([flat.get(cols[0], cols[0]), *cols[1:]]))
        ref_items = Path(tmp) / "items.item"
        ref_items.write_text("\n".join(rows) + "\n")
        args = EvalArgs(
            path_data=tmp,
            path_item_file=str(ref_items),
            file_extension=".npy",
            feature_size=frame_shift_s,
            speaker_mode="all",
            context_mode="within",
            distance_mode="cosine",
            max_size_group=max_size_group,
            max_x_across=max_x_across,
        )
        start = time.perf_counter()
        results = EvalABX().eval_abx(args)
        if timing is not None:
            timing["seconds"] = time.perf_counter() - start
    return {r["abx-s-condition"]: 100.0 * r["score"] for r in results}


def mfcc_features(corpus: Path) -> dict[str, np.ndarray]:
    """39-d MFCC at 100 Hz for every file of a demo corpus."""
    from hubertlab.data.manifest import read_manifest
    from hubertlab.evaluate.abx_sweep import mfcc_features as compute

    return compute(read_manifest(corpus / "manifest.csv"))


def make_corpus(out: Path, minutes: float, seed: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "hubertlab.cli",
        "demo-corpus",
        str(out),
        "--minutes",
        str(minutes),
        "--seed",
        str(seed),
    ]
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ref-dir", type=Path, default=Path("/tmp/refabx/site"))
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args(argv)
    if not ensure_reference(args.ref_dir):
        print("cannot run the reference: fixture not written", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        make_corpus(corpus, args.minutes, args.seed)
        features = mfcc_features(corpus)
        item_text = (corpus / "abx.item").read_text()
    # float16 keeps the fixture small; the reference scores exactly these (rounded) values.
    features = {k: v.astype(np.float16) for k, v in features.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    item_file = args.out / "demo.item"
    item_file.write_text(item_text)
    np.savez_compressed(
        args.out / "demo_mfcc.npz", **{k.replace("/", "__"): v for k, v in features.items()}
    )
    as_float32 = {k: v.astype(np.float32) for k, v in features.items()}
    t0 = time.perf_counter()
    exact = run_reference(as_float32, item_file, 0.01)
    seconds = time.perf_counter() - t0
    sampled = run_reference(as_float32, item_file, 0.01, max_size_group=10, max_x_across=5)
    expected = {
        "reference": REFERENCE_PACKAGE,
        "corpus": {"minutes": args.minutes, "seed": args.seed},
        "frame_shift_s": 0.01,
        "features": "hubertlab mfcc_of_waveform, float16 (npz keys: '/' -> '__')",
        "no_sampling": {**exact, "max_size_group": NO_SAMPLING, "max_x_across": NO_SAMPLING},
        "reference_defaults": {**sampled, "max_size_group": 10, "max_x_across": 5, "seed": 3459},
        "reference_seconds": round(seconds, 2),
    }
    (args.out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
