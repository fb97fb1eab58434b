"""Speed perturbation: audio played faster or slower, units stretched alike, drawn
deterministically, only in training batches, and refused outside [0.5, 2]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hubertlab.constants import SAMPLE_RATE, num_frames
from hubertlab.data.dataset import CropCollator
from hubertlab.data.sampler import SampleKey
from hubertlab.data.speed import draw_speed, perturb_speed
from hubertlab.train.config import train_config_from_dict


def _tone(hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.sin(2 * np.pi * hz * t).astype(np.float32)


def _peak_hz(wav: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wav))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(wav))


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.5, 2.0])
def test_faster_audio_is_shorter_and_higher_and_its_units_are_stretched(factor):
    wav = _tone(440.0, 2.0)
    frames = num_frames(len(wav))
    units = np.arange(frames, dtype=np.int32)  # unit = the frame's own index
    out, (stretched,) = perturb_speed(wav, [units], factor)
    assert abs(len(out) - len(wav) / factor) <= 2
    assert _peak_hz(out) == pytest.approx(440.0 * factor, rel=0.01)
    assert len(stretched) == num_frames(len(out))
    # New frame i, centred on sample 320 i + 200, takes the unit of the original frame whose
    # centre is nearest to sample (320 i + 200) * factor.
    centre = (320 * np.arange(len(stretched)) + 200) * factor
    expected = np.clip((centre - 200) / 320, 0, frames - 1)
    assert np.all(np.abs(stretched - expected) <= 0.5 + 1e-9)
    assert np.all(np.diff(stretched) >= 0) and 0 <= stretched[0] and stretched[-1] <= frames - 1


def test_factor_one_and_no_units_pass_through():
    wav = _tone(200.0, 1.0)
    assert perturb_speed(wav, [], 1.0)[0] is wav
    out, units = perturb_speed(wav, [None], 1.1)
    assert units == [None] and len(out) < len(wav)


def test_the_factor_is_a_function_of_seed_epoch_and_utterance():
    speeds = (0.9, 1.0, 1.1)
    draws = [draw_speed(speeds, 0, 0, i) for i in range(60)]
    assert draws == [draw_speed(speeds, 0, 0, i) for i in range(60)]
    assert set(draws) == set(speeds)
    assert draws != [draw_speed(speeds, 0, 1, i) for i in range(60)]  # another epoch
    assert draws != [draw_speed(speeds, 1, 0, i) for i in range(60)]  # another seed


def _items(num: int) -> list[dict]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(num):
        wav = rng.standard_normal(SAMPLE_RATE + 3200 * i).astype(np.float32)
        units = np.arange(num_frames(len(wav)), dtype=np.int32)
        items.append({"key": SampleKey(0, 0, 0, i), "wav": wav, "units": [units]})
    return items


def test_collator_perturbs_each_item_by_its_own_draw_and_keeps_units_aligned():
    speeds = (0.8, 1.25)
    plain = CropCollator(max_samples=10 * SAMPLE_RATE, batching="pad", random_crop=False)
    perturbed = CropCollator(
        max_samples=10 * SAMPLE_RATE, batching="pad", random_crop=False, speeds=speeds
    )
    items = _items(6)
    batch, again, reference = perturbed(items), perturbed(items), plain(items)
    assert torch.equal(batch.waveforms, again.waveforms)  # deterministic
    for b, item in enumerate(items):
        factor = draw_speed(speeds, 0, 0, item["key"].index)
        n = len(item["wav"])
        assert abs(int(batch.lengths[b]) - n / factor) <= 2
        assert int(reference.lengths[b]) == n
        count = int(batch.frame_lengths[b])
        labels = batch.labels[0][b, :count].numpy()
        original = (320 * np.arange(count) + 200) * factor  # centres in the original audio
        expected = np.clip((original - 200) / 320, 0, len(item["units"][0]) - 1)
        assert np.all(np.abs(labels - expected) <= 0.5 + 1e-9)
        assert np.all(batch.labels[0][b, count:].numpy() == -1)


def test_config_refuses_factors_outside_the_range():
    table = {
        "model": {"kind": "hubert", "preset": "tiny"},
        "data": {"train_manifest": "-", "train_units": ["-"], "num_units": [10]},
        "run": {"out_dir": "-"},
    }
    table["data"]["speed_perturb"] = [0.9, 1.0, 1.1]
    assert train_config_from_dict(table).data.speed_perturb == (0.9, 1.0, 1.1)
    table["data"]["speed_perturb"] = [0.9, 3.0]
    with pytest.raises(ValueError, match=r"data\.speed_perturb: .*\[3\.0\]"):
        train_config_from_dict(table)
