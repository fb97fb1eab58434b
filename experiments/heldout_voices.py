"""ABX on voices the demo never trained on (issue 23: the demo's evaluation corpus has the
training corpus's eight speakers; audio of other voices is the check that matters).

    python experiments/heldout_voices.py OUT --runs DEMO/exp-hubert-cmvn-s0-3000-it1 ...
        [--minutes 10] [--speakers 16] [--iteration 1]

Synthesises (once) an evaluation corpus of `--speakers` demo speakers (seed 0, the eval
sentences) and keeps only those the demo's corpus (its first 8 speakers) does not have: other
eSpeak voices, rates, pitches, microphones and rooms. Then scores, each once (resumable), MFCC
+ CMVN, raw MFCC, and every layer of each run's iteration model; prints a table of each one's
best layer (within / across %) and writes OUT/heldout.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hubertlab.data.manifest import read_manifest, relocate, write_manifest
from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus, make_speakers
from hubertlab.demo.recipe import DemoSettings


def heldout_corpus(out: Path, minutes: float, speakers: int) -> Path:
    """out/corpus (all speakers) -> out/heldout/{manifest.csv, abx.item} of the new voices."""
    cfg = DemoCorpusConfig(minutes=minutes, speakers=speakers, seed=0, split="eval")
    if not (out / "corpus" / "corpus.json").is_file():
        build_demo_corpus(out / "corpus", cfg)
    known = {s.name for s in make_speakers(DemoCorpusConfig(speakers=DemoSettings().speakers))}
    new = {s.name for s in make_speakers(cfg)} - known
    if not new:
        raise ValueError(f"--speakers {speakers}: no voice beyond the demo's {len(known)}")
    folder = out / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out / "corpus" / "manifest.csv")
    rows = [r for r in manifest if r.fileid.split("/")[0] in new]
    write_manifest(relocate(rows, manifest.root, folder / "manifest.csv"), folder / "manifest.csv")
    lines = (out / "corpus" / "abx.item").read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split()[0].split("/")[0] in new]
    (folder / "abx.item").write_text("\n".join(kept) + "\n")
    print(f"{len(rows)} files, {len(kept) - 1} ABX items, speakers: {', '.join(sorted(new))}")
    return folder


def score(folder: Path, name: str, source: list[str], out: Path) -> dict:
    result = out / "abx.json"
    if not result.is_file():
        hubertlab = str(Path(sys.executable).with_name("hubertlab"))
        command = [hubertlab, "abx", str(folder / "abx.item"), "--manifest"]
        command += [str(folder / "manifest.csv"), *source, "--out", str(out)]
        subprocess.run(command, check=True)
    best = json.loads(result.read_text())["best"]  # MFCC: its one row; a model: best layer
    layer = "" if best["layer"] is None else f" (layer {best['layer']})"
    return {"name": name + layer, "within": best["within"], "across": best["across"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runs", nargs="*", type=Path, default=[])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speakers", type=int, default=16)
    parser.add_argument("--iteration", type=int, default=1)
    args = parser.parse_args()
    folder = heldout_corpus(args.out, args.minutes, args.speakers)
    rows = [
        score(folder, "MFCC + CMVN", ["--mfcc", "--cmvn"], args.out / "scores" / "mfcc-cmvn"),
        score(folder, "MFCC (raw)", ["--mfcc"], args.out / "scores" / "mfcc"),
    ]
    for run in args.runs:
        model = run / f"iteration{args.iteration}" / "model"
        if not model.is_dir():
            raise FileNotFoundError(f"{model}: no trained model of iteration {args.iteration}")
        out = args.out / "scores" / f"{run.name}-it{args.iteration}"
        rows.append(score(folder, run.name, ["--checkpoint", str(model)], out))
    table = ["| features | within % | across % |", "|---|---|---|"]
    table += [f"| {r['name']} | {r['within']:.2f} | {r['across']:.2f} |" for r in rows]
    text = "\n".join(table) + "\n"
    (args.out / "heldout.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
