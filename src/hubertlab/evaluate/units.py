"""Unit quality against phone alignments (HuBERT paper): phone purity, cluster purity, PNMI,
plus codebook usage.

With frame-level phone labels y and units z (the phone under the centre of each 20 ms frame,
frame k centred at 0.02 k + 0.0125 s):
  phone purity   = E_z[max_y p(y|z)]   (how well a unit predicts a phone)
  cluster purity = E_y[max_z p(z|y)]   (how concentrated a phone is on one unit)
  PNMI           = I(y; z) / H(y)      (share of the phone entropy the units explain)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hubertlab.constants import LABEL_RATE_HZ, SAMPLE_RATE
from hubertlab.data.alignments import FRAME_HOP_S, FRAME_OFFSET_S, SIL, Segment, frame_phone_labels
from hubertlab.evaluate.frame_checks import FRAME_COUNT_TOLERANCE, check_frame_counts

UNITS_META = "units.json"  # written beside units.jsonl by `hubertlab transcribe`
# Without the audio lengths, units may run this much past the phones' end (alignments that
# stop before trailing silence); units at twice the label rate run twice as far.
PHONES_END_SLACK = 1.5


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def codebook_usage(units: np.ndarray, num_units: int | None = None) -> dict:
    """Perplexity (exp of the unit entropy) and used / unused units of a flat unit array."""
    if len(units) and units.min() < 0:
        raise ValueError(f"unit ids must be >= 0, found {int(units.min())}")
    size = max(int(units.max()) + 1 if len(units) else 0, num_units or 0)
    counts = np.bincount(units, minlength=size)
    used = int((counts > 0).sum())
    out = {
        "unit_perplexity": float(np.exp(_entropy(counts / max(counts.sum(), 1)))),
        "used_units": used,
    }
    if num_units is not None:
        if size > num_units:
            raise ValueError(f"unit id {size - 1} found, but num_units is {num_units}")
        out["num_units"] = num_units
        out["unused_units"] = num_units - used
    return out


def purity_and_pnmi(phone_ids: np.ndarray, units: np.ndarray) -> dict:
    """Phone purity, cluster purity and PNMI from aligned per-frame phone ids and units."""
    if len(phone_ids) != len(units):
        raise ValueError(f"{len(phone_ids)} phone labels for {len(units)} units")
    if len(units) == 0:
        raise ValueError("no frames to score")
    num_phones, num_units = int(phone_ids.max()) + 1, int(units.max()) + 1
    joint = np.bincount(phone_ids * num_units + units, minlength=num_phones * num_units)
    p_yz = joint.reshape(num_phones, num_units) / len(units)  # (phones, units)
    p_y, p_z = p_yz.sum(1), p_yz.sum(0)
    nz = p_yz > 0
    mutual = float((p_yz[nz] * np.log(p_yz[nz] / np.outer(p_y, p_z)[nz])).sum())
    h_y = _entropy(p_y)
    return {
        "phone_purity": float(p_yz.max(0).sum()),
        "cluster_purity": float(p_yz.max(1).sum()),
        "pnmi": mutual / h_y if h_y > 0 else 0.0,
        "phone_entropy_bits": h_y / np.log(2),
        "mutual_information_bits": mutual / np.log(2),
    }


def unit_quality(
    units_by_fileid: Mapping[str, np.ndarray | Sequence[int]],
    segments: Mapping[str, Sequence[Segment]],
    *,
    num_units: int | None = None,
    frame_hop_s: float = FRAME_HOP_S,
    frame_offset_s: float = FRAME_OFFSET_S,
    exclude: Sequence[str] = (),
    strict: bool = True,
) -> dict:
    """Purities, PNMI and codebook usage of units (fileid -> per-frame ids) against phone
    segments (fileid -> [(onset_s, offset_s, phone)], e.g. `read_phone_segments`).

    Frames whose centre lies in no segment count as SIL. `exclude` drops frames of these
    phones (e.g. ("SIL",)). With `strict`, a fileid of the units without segments is an error
    naming it; otherwise such files are skipped (and counted in `files_without_phones`)."""
    phone_ids: list[np.ndarray] = []
    unit_arrays: list[np.ndarray] = []
    vocabulary: dict[str, int] = {}
    skipped = 0
    for fileid, units in units_by_fileid.items():
        if fileid not in segments:
            if strict:
                raise ValueError(f"no phone segments for fileid {fileid!r}")
            skipped += 1
            continue
        units = np.asarray(units, dtype=np.int64)
        labels = frame_phone_labels(
            segments[fileid], len(units), frame_hop_s=frame_hop_s, frame_offset_s=frame_offset_s
        )
        ids = np.array([vocabulary.setdefault(p, len(vocabulary)) for p in labels], np.int64)
        keep = np.array([p not in exclude for p in labels], bool)
        phone_ids.append(ids[keep])
        unit_arrays.append(units[keep])
    if not unit_arrays:
        raise ValueError("none of the units' fileids has phone segments")
    all_units = np.concatenate(unit_arrays)
    all_phones = np.concatenate(phone_ids)
    result = purity_and_pnmi(all_phones, all_units)
    result.update(codebook_usage(all_units, num_units))
    result.update(
        num_frames=int(len(all_units)),
        num_files=len(unit_arrays),
        num_phones=int(len(np.unique(all_phones))),
        files_without_phones=skipped,
        silence_excluded=SIL in exclude,
    )
    return result


def recorded_label_rate(units_path: str | Path) -> tuple[float, str]:
    """The label rate of a units file or folder, from the units.json beside it, and where it
    comes from; LABEL_RATE_HZ when nothing records it."""
    units_path = Path(units_path)
    meta_path = (units_path if units_path.is_dir() else units_path.parent) / UNITS_META
    if not meta_path.is_file():
        return float(LABEL_RATE_HZ), f"the default {LABEL_RATE_HZ} Hz (no {UNITS_META})"
    try:
        rate = json.loads(meta_path.read_text(encoding="utf-8"))["label_rate_hz"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{meta_path}: expected a JSON object with 'label_rate_hz'") from None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1e4:
        raise ValueError(f"{meta_path}: label_rate_hz must be a positive number, got {rate!r}")
    return float(rate), f"{meta_path} label_rate_hz"


def check_unit_counts(
    units_by_fileid: Mapping[str, np.ndarray | Sequence[int]],
    segments: Mapping[str, Sequence[Segment]],
    label_rate_hz: float,
    *,
    source: str,
    num_samples: Mapping[str, int] | None = None,
    audio: str = "",
) -> None:
    """Refuse units whose count does not fit the audio at `label_rate_hz` (a wrong rate, or
    units of other audio): PNMI of such units is a number, but a meaningless one.

    With `num_samples` (from the manifest) counts are checked against the audio lengths and
    phones may not end past the audio. Without, the phones' end bounds the audio from below:
    units must reach it, and may run at most PHONES_END_SLACK times as far."""
    hop_s = 1.0 / label_rate_hz
    if num_samples is not None:
        lengths = {f: len(u) for f, u in units_by_fileid.items()}
        check_frame_counts(lengths, num_samples, hop_s, source=source, audio=audio)
    for fileid, units in units_by_fileid.items():
        if not segments.get(fileid):
            continue
        phones_end_s = segments[fileid][-1][1]
        if num_samples is not None and fileid in num_samples:
            audio_s = num_samples[fileid] / SAMPLE_RATE
            if phones_end_s > audio_s + FRAME_COUNT_TOLERANCE * hop_s:
                raise ValueError(
                    f"phones of {fileid!r} end at {phones_end_s:.3f} s, past the end of its "
                    f"audio ({audio_s:.3f} s in {audio}): alignments of other audio?"
                )
            continue
        units_s = len(units) * hop_s
        too_short = units_s + (FRAME_COUNT_TOLERANCE + 1) * hop_s < phones_end_s
        too_long = units_s > PHONES_END_SLACK * phones_end_s + FRAME_COUNT_TOLERANCE * hop_s
        if too_short or too_long:
            raise ValueError(
                f"{source}: {fileid!r} has {len(units)} units, {units_s:.3f} s at "
                f"{label_rate_hz:g} units/s, but its phones end at {phones_end_s:.3f} s "
                f"(i.e. {len(units) / phones_end_s:.1f} units/s): units at another label rate "
                "or of other audio? (pass --manifest to check against the audio lengths)"
            )
