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
import math
from pathlib import Path

import numpy as np

from hubertlab.data.alignments import SIL, frame_phone_labels, read_phone_records
from hubertlab.evaluate.units import purity_and_pnmi
from hubertlab.units.assign import read_units


def labelled_frames(units: dict, records: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(units, speaker ids, phone ids) of the unit frames whose centre lies in a phone."""
    columns: list[list] = [[], [], []]
    for fileid, file_units in units.items():
        if fileid not in records:
            raise ValueError(f"{fileid}: no phone alignment in the phones file")
        record = records[fileid]
        labels = frame_phone_labels(record.segments, len(file_units))
        for unit, phone in zip(file_units.tolist(), labels, strict=True):
            if phone != SIL:
                for column, value in zip(columns, (unit, record.speaker, phone), strict=True):
                    column.append(value)
    if not columns[0]:
        raise ValueError("no unit frame falls inside a phone: wrong phones file?")
    speakers, phones = (np.unique(c, return_inverse=True)[1] for c in columns[1:])
    return np.array(columns[0]), speakers, phones


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phones", type=Path)
    parser.add_argument("units", nargs="+", type=Path)
    args = parser.parse_args()
    records = read_phone_records(args.phones)
    for folder in args.units:
        units, speakers, phones = labelled_frames(read_units(folder), records)
        with_phones, with_speakers = (purity_and_pnmi(y, units) for y in (phones, speakers))
        num_units = len(np.unique(units))
        bias = {  # the plug-in estimator's upward bias, (|U| - 1)(|Y| - 1) / (2 N ln 2)
            name: (num_units - 1) * (int(y.max()) / (2 * len(units) * math.log(2)))
            for name, y in (("phones", phones), ("speakers", speakers))
        }
        print(
            f"{folder}: I(U;P) {with_phones['mutual_information_bits']:.3f} bits "
            f"(bias ~{bias['phones']:.3f}), I(U;S) {with_speakers['mutual_information_bits']:.3f}"
            f" bits (bias ~{bias['speakers']:.3f}), H(S) "
            f"{with_speakers['phone_entropy_bits']:.3f} bits; {len(units)} frames, "
            f"{num_units} units, {int(speakers.max()) + 1} speakers"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
