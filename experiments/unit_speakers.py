"""How much the units of a k-means say about the speaker, beside how much they say about the
phone (issue 23: units of raw MFCC follow the speaker; units of MFCC + CMVN less so).

    python experiments/unit_speakers.py PHONES.jsonl UNITS_DIR [UNITS_DIR ...]

PHONES.jsonl: the evaluation corpus's phone alignments ({"fileid", "speaker", "phones"}), e.g.
DEMO/corpus/eval/phones.jsonl; UNITS_DIR: a pipeline's iteration<k>/units/eval. Prints, per
units file, the mutual information in bits of units and phones, I(U;P), and of units and
speakers, I(U;S), over the frames inside a phone (silence left out), with the plug-in
estimator: its upward bias is about (units - 1)(speakers - 1) / (2 N ln 2) bits, printed too.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from hubertlab.units.assign import read_units


def entropy(counts: Counter) -> float:
    p = np.array(list(counts.values()), dtype=float)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


def labelled_frames(units: dict, alignments: dict) -> list[tuple[int, str, str]]:
    """(unit, speaker, phone) of every 20 ms unit frame whose centre lies in a phone."""
    rows = []
    for fileid, file_units in units.items():
        if fileid not in alignments:
            raise ValueError(f"{fileid}: no phone alignment in the phones file")
        speaker, segments = alignments[fileid]
        starts = np.array([s[0] for s in segments])
        for i, unit in enumerate(file_units.tolist()):
            t = (i + 0.5) * 0.02
            j = int(np.searchsorted(starts, t, side="right")) - 1
            if j >= 0 and t < segments[j][1] and segments[j][2] != "SIL":
                rows.append((unit, speaker, segments[j][2]))
    if not rows:
        raise ValueError("no unit frame falls inside a phone: wrong phones file?")
    return rows


def mutual_information(rows: list[tuple], a: int, b: int) -> float:
    joint = Counter((r[a], r[b]) for r in rows)
    return (
        entropy(Counter(r[a] for r in rows)) + entropy(Counter(r[b] for r in rows)) - entropy(joint)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phones", type=Path)
    parser.add_argument("units", nargs="+", type=Path)
    args = parser.parse_args()
    alignments = {}
    for line in args.phones.read_text().splitlines():
        record = json.loads(line)
        alignments[record["fileid"]] = (record["speaker"], record["phones"])
    for folder in args.units:
        rows = labelled_frames(read_units(folder), alignments)
        units, speakers, phones = ({r[i] for r in rows} for i in range(3))
        bias = {
            name: (len(units) - 1) * (len(labels) - 1) / (2 * len(rows) * math.log(2))
            for name, labels in (("phones", phones), ("speakers", speakers))
        }
        print(
            f"{folder}: I(U;P) {mutual_information(rows, 0, 2):.3f} bits "
            f"(bias ~{bias['phones']:.3f}), I(U;S) {mutual_information(rows, 0, 1):.3f} bits "
            f"(bias ~{bias['speakers']:.3f}), H(S) {entropy(Counter(r[1] for r in rows)):.3f} bits;"
            f" {len(rows)} frames, {len(units)} units, {len(speakers)} speakers"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
