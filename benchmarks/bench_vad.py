"""VAD throughput (x real time) on a long-form demo recording for both backends, beside silero's
own get_speech_timestamps on the whole file loaded at once (the peer), measured in the same run;
then the peak RSS of `run_vad` on a long recording (a sparse 16 kHz WAV of mostly silence with a
minute of the demo's speech every hour, so nothing has to be generated): it must stay < 1 GiB
whatever the length, since audio is read block by block.

    python benchmarks/bench_vad.py [--minutes 10] [--rss-hours 24] [--rss-backend energy]
                                   [--only throughput|rss] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate import vad
from hubertlab.curate.speech import read_speech
from hubertlab.data.audio import read_audio
from hubertlab.data.manifest import read_manifest
from hubertlab.demo.longform import LongFormConfig, build_longform_corpus


def throughput(root: Path, repeats: int) -> None:
    """x real time of both backends, and of silero's get_speech_timestamps on the whole file
    (loaded at once): ours and the peer alternate, best of `repeats` each."""
    import torch
    from silero_vad import get_speech_timestamps

    manifest = read_manifest(root / "manifest.csv")
    truth = read_speech(root / "speech.jsonl")[0]
    seconds = manifest[0].num_samples / SAMPLE_RATE
    model = vad.load_silero()
    warm = torch.from_numpy(read_audio(manifest.root / manifest[0].path)[: 30 * SAMPLE_RATE])
    for _ in range(3):  # the TorchScript profiling executor optimises after a few runs
        vad.silero_probs([warm.numpy()], model)
        get_speech_timestamps(warm, model, sampling_rate=SAMPLE_RATE)

    def ours(backend):
        detect, _ = vad.make_detector(backend)
        return detect(vad.row_blocks(manifest[0], manifest.root))[0]

    def peer():
        wav = torch.from_numpy(read_audio(manifest.root / manifest[0].path))
        torch.set_num_threads(1)  # silero's import sets it so: the peer runs as shipped
        stamps = get_speech_timestamps(wav, model, sampling_rate=SAMPLE_RATE)
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]

    runs = {"ours energy": lambda: ours("energy"), "ours silero": lambda: ours("silero"),
            "peer silero get_speech_timestamps (whole file)": peer}  # fmt: skip
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    peer_s = best["peer silero get_speech_timestamps (whole file)"]
    for name, elapsed in best.items():
        f1 = vad.frame_scores(list(truth.segments), runs[name](), seconds)["f1"]
        print(f"{name:48s} {seconds / elapsed:8.1f} x real time (F1 {f1:.3f}), "
              f"time / peer's {elapsed / peer_s:.2f}")  # fmt: skip


def write_sparse_wav(path: Path, hours: float, speech: np.ndarray) -> int:
    """A PCM16 WAV of `hours`, zeros (a sparse file) but for `speech` at the start of every
    hour. Returns its sample count."""
    num_samples = int(hours * 3600 * SAMPLE_RATE)
    data_bytes = num_samples * 2
    if data_bytes + 36 >= 2**32:
        raise ValueError("a RIFF WAV holds at most ~37 h at 16 kHz PCM16")
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)
        for hour in range(int(np.ceil(hours))):
            offset = hour * 3600 * SAMPLE_RATE * 2
            if offset + len(pcm) <= data_bytes:
                f.seek(len(header) + offset)
                f.write(pcm)
    return num_samples


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a child would report
# the parent's peak.
_CHILD = """
import json, re, sys, time
from hubertlab.curate import vad
manifest, out, backend = sys.argv[1:4]
start = time.perf_counter()
if backend != "none":
    vad.run_vad(manifest, out, backend=backend)
status = open("/proc/self/status").read()
print(json.dumps({"seconds": time.perf_counter() - start,
                  "max_rss_kib": int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))}))
"""


def peak_rss(root: Path, hours: float, backend: str) -> None:
    speech = read_audio(root / "longform/rec_0000.flac")[: 60 * SAMPLE_RATE]
    num_samples = write_sparse_wav(root / "long.wav", hours, speech)
    (root / "long.csv").write_text(f"fileid,path,num_samples\nlong,long.wav,{num_samples}\n")
    results = {}
    for name in ("none", backend):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root / "long.csv"), str(root / f"vad-{name}"),
             name], capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ran = results[backend]
    found = read_speech(root / f"vad-{backend}")[0]
    speed = hours * 3600 / ran["seconds"]
    print(f"{backend} VAD of a {hours:g} h recording: {ran['seconds']:.1f} s "
          f"({speed:.0f} x real time, {ran['seconds'] / hours:.1f} s per h), "
          f"peak RSS {ran['max_rss_kib'] / 2**20:.3f} GiB (imports alone "
          f"{results['none']['max_rss_kib'] / 2**20:.3f} GiB), {len(found.segments)} segments, "
          f"{found.speech_s:.0f} s speech")  # fmt: skip
    if ran["max_rss_kib"] >= 2**20:
        print("FAIL: peak RSS >= 1 GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="long-form demo length")
    parser.add_argument("--rss-hours", type=float, default=24.0)
    parser.add_argument("--rss-backend", choices=vad.BACKENDS, default="energy")
    parser.add_argument("--only", choices=("throughput", "rss"), help="run one part")
    parser.add_argument("--repeats", type=int, default=2, help="throughput: best of")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        minutes = args.minutes if args.only != "rss" else 1.0
        build_longform_corpus(root, LongFormConfig(hours=minutes / 60, recording_minutes=minutes))
        if args.only != "rss":
            throughput(root, args.repeats)
        if args.only != "throughput":
            peak_rss(root, args.rss_hours, args.rss_backend)


if __name__ == "__main__":
    main()
