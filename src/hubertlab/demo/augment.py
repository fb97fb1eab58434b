"""Channel, room and noise simulation for the demo corpus, in numpy (no scipy): a per-speaker
linear-phase EQ (high-pass, low-pass, two peaks), a synthetic exponentially decaying room
impulse response and coloured noise at a given SNR. All randomness comes from the caller's
np.random.Generator, so a file is a pure function of its seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubertlab.constants import SAMPLE_RATE

_FIR_TAPS = 255  # odd: a linear-phase filter with an integer delay of 127 samples


@dataclass(frozen=True)
class Channel:
    """A microphone/line response: Butterworth-like magnitudes and Gaussian peaks (log-f)."""

    highpass_hz: float
    lowpass_hz: float
    peaks: tuple[tuple[float, float], ...]  # (center_hz, gain_db), one octave wide

    @classmethod
    def random(cls, rng: np.random.Generator) -> Channel:
        peaks = tuple(
            (float(np.exp(rng.uniform(np.log(250), np.log(5000)))), float(rng.uniform(-8, 8)))
            for _ in range(2)
        )
        return cls(
            highpass_hz=float(rng.uniform(60, 300)),
            lowpass_hz=float(rng.uniform(3400, 7600)),
            peaks=peaks,
        )

    def magnitude(self, freqs_hz: np.ndarray) -> np.ndarray:
        f = np.maximum(freqs_hz, 1.0)
        gain = 1.0 / np.sqrt(1.0 + (self.highpass_hz / f) ** 4)  # 2nd-order high-pass
        gain = gain / np.sqrt(1.0 + (f / self.lowpass_hz) ** 8)  # 4th-order low-pass
        db = np.zeros_like(f)
        for center_hz, gain_db in self.peaks:
            db += gain_db * np.exp(-0.5 * (np.log2(f / center_hz) / 0.5) ** 2)
        return gain * 10.0 ** (db / 20.0)

    def fir(self) -> np.ndarray:
        """Linear-phase FIR of this response: (255,), delay 127 samples."""
        n_fft = 1024
        mag = self.magnitude(np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE))
        zero_phase = np.fft.irfft(mag, n_fft)  # real, symmetric around 0
        half = _FIR_TAPS // 2
        taps = np.concatenate([zero_phase[-half:], zero_phase[: half + 1]])
        return taps * np.hanning(_FIR_TAPS + 2)[1:-1]


def room_impulse_response(
    rng: np.random.Generator, *, rt60_s: float, direct_to_reverb_db: float
) -> np.ndarray:
    """Direct path at sample 0, then Gaussian noise decaying 60 dB in rt60_s after a 2-8 ms gap,
    scaled to the given direct-to-reverberant energy ratio."""
    num_samples = int(min(rt60_s, 0.6) * SAMPLE_RATE)
    t = np.arange(num_samples) / SAMPLE_RATE
    tail = rng.standard_normal(num_samples) * np.exp(-6.908 * t / rt60_s)
    tail[: int(rng.uniform(0.002, 0.008) * SAMPLE_RATE)] = 0.0
    tail *= np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / max(np.sum(tail**2), 1e-12))
    tail[0] = 1.0
    return tail


def fft_convolve(x: np.ndarray, h: np.ndarray, *, delay: int = 0) -> np.ndarray:
    """x * h, cut to len(x) starting `delay` samples in (to undo a filter's delay)."""
    n = len(x) + len(h) - 1
    n_fft = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(h, n_fft), n_fft)
    return y[delay : delay + len(x)]


def coloured_noise(rng: np.random.Generator, num_samples: int, *, exponent: float) -> np.ndarray:
    """Unit-power noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    n_fft = 1 << max(num_samples - 1, 1).bit_length()  # a power of two: fast FFTs
    spectrum = np.fft.rfft(rng.standard_normal(n_fft))
    f = np.maximum(np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE), 20.0)
    noise = np.fft.irfft(spectrum * f ** (-exponent / 2), n_fft)[:num_samples]
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def degrade(
    wav: np.ndarray,
    rng: np.random.Generator,
    *,
    channel: Channel,
    rt60_s: float,
    speech: slice,
) -> np.ndarray:
    """Room, channel and noise (SNR 15-30 dB against the power of `speech`): (num_samples,)."""
    rir = room_impulse_response(rng, rt60_s=rt60_s, direct_to_reverb_db=rng.uniform(3, 12))
    response = np.convolve(channel.fir(), rir)
    out = fft_convolve(wav.astype(np.float64), response, delay=_FIR_TAPS // 2)
    speech_power = float(np.mean(out[speech] ** 2)) if out[speech].size else 0.0
    snr_db = rng.uniform(15, 30)
    noise = coloured_noise(rng, len(out), exponent=rng.uniform(0.0, 1.5))
    return out + noise * np.sqrt(speech_power * 10.0 ** (-snr_db / 10.0))
