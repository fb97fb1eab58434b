"""ABX sweep helpers: the CMVN MFCC baseline."""

from __future__ import annotations

import json

import numpy as np

from hubertlab.cli import main
from hubertlab.features.cmvn import utterance_cmvn
from tests.conftest import write_tone


def test_cmvn_standardises_each_coefficient_over_the_utterance():
    rng = np.random.default_rng(0)
    frames = rng.normal(3.0, 5.0, size=(200, 39)).astype(np.float32) * np.arange(1, 40)
    out = utterance_cmvn(frames)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-4)
    # A constant gain or offset on a coefficient (a channel) does not change the result.
    np.testing.assert_allclose(utterance_cmvn(frames * 2 + 7), out, atol=1e-4)


def test_cli_mfcc_with_cmvn(tmp_path, capsys):
    rows = ["fileid,path,num_samples"]
    items = ["#file onset offset #phone prev-phone next-phone speaker"]
    for spk in ("s1", "s2"):
        n = write_tone(tmp_path / f"{spk}.wav", 1.0)
        rows.append(f"{spk},{spk}.wav,{n}")
        for k, phone in enumerate("aabbab"):
            items.append(f"{spk} {0.1 * k:.2f} {0.1 * k + 0.1:.2f} {phone} x y {spk}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.item").write_text("\n".join(items) + "\n")
    args = ["abx", str(tmp_path / "t.item"), "--manifest", str(tmp_path / "m.csv"), "--mfcc"]
    assert main([*args, "--cmvn", "--out", str(tmp_path / "c")]) == 0
    score = json.loads((tmp_path / "c" / "abx.json").read_text())["scores"][0]
    assert score["name"] == "mfcc+cmvn" and score["within"]["num_triplets"] > 0
    assert main(["abx", str(tmp_path / "t.item"), "--features", str(tmp_path), "--cmvn",
                 "--out", str(tmp_path / "x")]) != 0  # fmt: skip
    assert "--cmvn goes with --mfcc or --checkpoint" in capsys.readouterr().err
