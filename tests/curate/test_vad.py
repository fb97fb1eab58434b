"""VAD: scored against the long-form demo's true speech, block-size independent, resumable."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hubertlab.cli import main
from hubertlab.curate import vad
from hubertlab.curate.speech import read_speech
from hubertlab.data.audio import read_audio
from hubertlab.data.manifest import read_manifest
from tests.longform_fixtures import longform  # noqa: F401


def _truth(longform):  # noqa: F811
    return {s.fileid: s for s in read_speech(longform / "speech.jsonl")}


@pytest.mark.parametrize("backend, floor", [("energy", 0.9), ("silero", 0.93)])
def test_vad_f1_against_the_synthesized_islands(longform, tmp_path, backend, floor):  # noqa: F811
    vad.run_vad(longform / "manifest.csv", tmp_path / "vad", backend=backend)
    truth = _truth(longform)
    for found in read_speech(tmp_path / "vad"):
        ref = truth[found.fileid]
        scores = vad.frame_scores(list(ref.segments), list(found.segments), ref.duration_s)
        print(backend, found.fileid, {k: round(v, 3) for k, v in scores.items()})
        assert scores["f1"] > floor, (backend, found.fileid, scores)


def test_silero_blocks_give_the_probabilities_of_the_whole_file(longform):  # noqa: F811
    from silero_vad import get_speech_timestamps

    wav = read_audio(longform / "longform/rec_0000.flac")[: 16000 * 10 + 777]
    model = vad.load_silero()
    whole, n = vad.silero_probs([wav], model)
    odd_blocks = [wav[i : i + 12_345] for i in range(0, len(wav), 12_345)]
    blocked, n2 = vad.silero_probs(odd_blocks, model)
    assert n == n2 == len(wav)
    np.testing.assert_array_equal(whole, blocked)
    ours = vad.silero_segments(blocked, n, vad.SileroVadConfig())
    peer = get_speech_timestamps(wav, model, sampling_rate=16000)
    assert ours and ours == [(s["start"] / 16000, s["end"] / 16000) for s in peer]


def test_energy_vad_does_not_depend_on_block_size(longform):  # noqa: F811
    wav = read_audio(longform / "longform/rec_0001.flac")
    cfg = vad.EnergyVadConfig()
    a, _ = vad.energy_segments([wav], cfg)
    b, _ = vad.energy_segments((wav[i : i + 7_777] for i in range(0, len(wav), 7_777)), cfg)
    assert a == b and len(a) > 3


def test_loading_silero_leaves_the_thread_count_alone():
    code = (
        "import torch; torch.set_num_threads(2); from hubertlab.curate.vad import load_silero, "
        "silero_probs; import numpy as np; m = load_silero(); a = torch.get_num_threads(); "
        "silero_probs([np.zeros(2000, np.float32)], m); print(a, torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2"]


def test_mask_to_segments_bridges_drops_and_pads():
    mask = np.zeros(300, bool)
    mask[10:50] = True  # 0.40 s
    mask[60:100] = True  # 0.1 s silence before: bridged
    mask[200:205] = True  # 0.05 s: dropped
    segs = vad.mask_to_segments(mask, 0.01, 3.0, min_speech_s=0.2, min_silence_s=0.3, pad_s=0.1)
    np.testing.assert_allclose(segs, [(0.0, 1.1)])


def test_run_vad_resumes_after_a_crash_and_skips_a_done_shard(longform, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "vad"
    fresh = tmp_path / "fresh"
    vad.run_vad(longform / "manifest.csv", fresh, backend="energy")
    real = vad.energy_segments
    calls = []

    def dies_on_second(blocks, cfg):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(blocks, cfg)

    monkeypatch.setattr(vad, "energy_segments", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        vad.run_vad(longform / "manifest.csv", out, backend="energy")
    assert len((out / "shard-00000-of-00001.jsonl").read_text().splitlines()) == 1
    # A half-written line left by the crash is cut back on resume.
    with open(out / "shard-00000-of-00001.jsonl", "a") as f:
        f.write('{"fileid": "longform/rec_00')
    monkeypatch.setattr(vad, "energy_segments", real)
    vad.run_vad(longform / "manifest.csv", out, backend="energy")
    assert (out / "shard-00000-of-00001.jsonl").read_text() == (
        fresh / "shard-00000-of-00001.jsonl"
    ).read_text()
    monkeypatch.setattr(vad, "energy_segments", dies_on_second)  # a done shard is not rerun
    vad.run_vad(longform / "manifest.csv", out, backend="energy")
    with pytest.raises(ValueError, match="other settings"):
        vad.run_vad(longform / "manifest.csv", out, backend="energy",
                    config=vad.EnergyVadConfig(margin_db=3))  # fmt: skip


def test_cli_shards_and_reads_ups_format(longform, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "vad"
    for shard in (0, 1):
        args = ["vad", str(longform / "manifest.csv"), str(out), "--backend", "energy",
                "--shard", str(shard), "--num-shards", "2"]  # fmt: skip
        assert main(args) == 0
    assert "all shards done: 2 recordings" in capsys.readouterr().out
    ours = read_speech(out)
    ups = tmp_path / "ups.jsonl"
    with open(ups, "w") as f:
        for s in ours:
            stamps = [{"start": round(a * 16000), "end": round(b * 16000)} for a, b in s.segments]
            f.write(json.dumps({s.fileid + ".flac": {"tar_number": "0", "duration": s.duration_s,
                                                    "timestamps": stamps}}) + "\n")  # fmt: skip
    back = read_speech(ups)
    assert [b.archive for b in back] == ["0", "0"]
    for a, b in zip(ours, back, strict=True):
        np.testing.assert_allclose(a.segments, b.segments, atol=1e-4)
    manifest = read_manifest(longform / "manifest.csv")
    assert len(manifest) == 2


def test_unfinished_vad_folder_is_named(longform, tmp_path):  # noqa: F811
    vad.run_vad(longform / "manifest.csv", tmp_path / "v", backend="energy", num_shards=2)
    with pytest.raises(ValueError, match="shard 1 of 2 is not finished"):
        read_speech(tmp_path / "v")


def test_vad_of_tar_members_and_spans_matches_the_files(longform, tmp_path):  # noqa: F811
    import tarfile

    from hubertlab.data.manifest import ManifestRow, write_manifest
    from hubertlab.data.scan import scan_tar

    with tarfile.open(tmp_path / "rec.tar", "w") as tar:
        tar.add(longform / "longform/rec_0000.flac", arcname="longform/rec_0000.flac")
    members = scan_tar(tmp_path / "rec.tar").rows
    span = ManifestRow("span", str(longform / "longform/rec_0000.flac"), 30 * 16000, start=0)
    write_manifest([*members, span], tmp_path / "m.csv")
    vad.run_vad(tmp_path / "m.csv", tmp_path / "vad", backend="energy", block_samples=50_000)
    vad.run_vad(longform / "manifest.csv", tmp_path / "ref", backend="energy")
    got = {s.fileid: s for s in read_speech(tmp_path / "vad")}
    ref = {s.fileid: s for s in read_speech(tmp_path / "ref")}
    assert got["longform/rec_0000"].segments == ref["longform/rec_0000"].segments
    assert got["longform/rec_0000"].archive == "rec.tar"
    assert got["span"].duration_s == 30.0 and len(got["span"].segments) > 2
