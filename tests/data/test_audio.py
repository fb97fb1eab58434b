import io
import tarfile

import numpy as np
import pytest
import soundfile as sf

from hubertlab.data.audio import AudioError, audio_info, read_audio, standardize_waveform
from tests.conftest import write_tone


def test_reads_mono_16k(tmp_path):
    n = write_tone(tmp_path / "x.wav", 0.5)
    wav = read_audio(tmp_path / "x.wav")
    assert wav.dtype == np.float32 and wav.shape == (n,)


def test_stereo_is_mixed_down(tmp_path):
    write_tone(tmp_path / "s.wav", 0.2, channels=2)
    stereo, _ = sf.read(tmp_path / "s.wav", dtype="float32")
    wav = read_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(wav, stereo.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampling_length_matches_header_count(tmp_path, rate):
    write_tone(tmp_path / "r.wav", 0.37, sample_rate=rate)
    info = audio_info(tmp_path / "r.wav")
    wav = read_audio(tmp_path / "r.wav")
    assert info.sample_rate == rate
    assert wav.shape == (info.num_samples,)
    # The tone survives resampling: its dominant frequency is still 220 Hz.
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * 16000 / len(wav) - 220) < 5


def test_standardize():
    wav = standardize_waveform(np.linspace(-3, 5, 1000, dtype=np.float32))
    assert abs(wav.mean()) < 1e-5 and abs(wav.std() - 1) < 1e-3


def test_tar_member_by_byte_offset(tmp_path):
    write_tone(tmp_path / "a.wav", 0.3)
    write_tone(tmp_path / "b.wav", 0.6)
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "a.wav", arcname="d/a.wav")
        tar.add(tmp_path / "b.wav", arcname="d/b.wav")
    with tarfile.open(archive) as tar:
        member = tar.getmember("d/b.wav")
    wav = read_audio(archive, byte_offset=member.offset_data, byte_size=member.size)
    np.testing.assert_array_equal(wav, read_audio(tmp_path / "b.wav"))


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(AudioError, match="bad.wav"):
        read_audio(bad)
    with pytest.raises(AudioError, match="bad.wav"):
        audio_info(bad)
    with pytest.raises(AudioError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav")
    short = tmp_path / "short.tar"
    short.write_bytes(b"x" * 10)
    with pytest.raises(AudioError, match="archive ends"):
        read_audio(short, byte_offset=0, byte_size=100)


def test_nan_audio_is_refused(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(
        str(path), np.array([0.0, np.nan, 0.1] * 200, dtype=np.float32), 16000, subtype="FLOAT"
    )
    with pytest.raises(AudioError, match="NaN"):
        read_audio(path)


def test_empty_wav_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, dtype=np.float32), 16000, format="WAV")
    path.write_bytes(buf.getvalue())
    with pytest.raises(AudioError, match="no audio samples"):
        audio_info(path)
