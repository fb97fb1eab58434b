"""Speech synthesis with libespeak-ng (from the espeakng-loader wheel) through ctypes, with the
sample position of every phone.

libespeak-ng keeps process-wide state (voice, parameters, the waveform generator's phase, pitch
flutter and echo buffers), and that state carries over from one utterance to the next: the same
text synthesised twice in a row gives different samples. `synthesize` therefore runs each
utterance in a forked child of a process whose engine was initialised but never used, so the
output depends only on its arguments (text, voice, rate, pitch, seed).
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import sys
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ESPEAK_SAMPLE_RATE = 22_050

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7
_BUFFER_MS = 200


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),  # WORD and SENTENCE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events: the mnemonic, NUL-terminated if < 8
    ]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h (espeak-ng 1.52)."""

    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples since the start of the message
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Synthesis:
    """Samples at `sample_rate` and eSpeak's phone events as (sample, mnemonic), in order.

    An event marks where eSpeak starts the phone; a stop's event sits at its release, after
    the silent closure (see `corpus.move_stop_onsets`). Pause phones start with "_"."""

    samples: np.ndarray  # (num_samples,) int16
    sample_rate: int
    events: tuple[tuple[int, str], ...]


class _Engine:
    """The initialised library and the buffers its callback fills."""

    def __init__(self) -> None:
        try:
            import espeakng_loader  # lazy: optional (hubertlab[demo]); its absence is explained
        except ImportError as e:
            raise ImportError(
                "the demo corpus needs the espeakng-loader wheel: pip install 'hubertlab[demo]'"
            ) from e
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data_path = espeakng_loader.get_data_path().encode()
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, options)
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {ESPEAK_SAMPLE_RATE}")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []
        self._callback = _Callback(self._on_audio)  # kept alive: the library holds a pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if num_samples > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                phone = event.id.string.decode("utf-8", "replace")
                if phone:
                    self.events.append((int(event.sample), phone))
            i += 1
        return 0  # 0: go on synthesising

    def run(self, text: str, voice: str, params: dict[int, int], seed: int) -> Synthesis:
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for param, value in params.items():
            lib.espeak_SetParameter(param, value, 0)
        lib.espeak_ng_SetRandSeed(seed)
        self.chunks.clear()
        self.events.clear()
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        lib.espeak_Synchronize()
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return Synthesis(samples.astype(np.int16), ESPEAK_SAMPLE_RATE, tuple(self.events))


_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE  # the library itself is process-wide state; one engine per process
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _run_in_child(engine: _Engine, *args) -> Synthesis:
    """Synthesise in a forked child so the engine state here stays as initialised."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(read_fd)
            try:
                result: object = engine.run(*args)
            except Exception as e:  # sent to the parent, which raises it
                result = e
            with os.fdopen(write_fd, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as f:
            result = pickle.load(f)
    except EOFError:
        result = RuntimeError("the eSpeak synthesis process died without a result")
    finally:
        os.waitpid(pid, 0)
    if isinstance(result, Exception):
        raise result
    return result


def synthesize(
    text: str,
    voice: str,
    *,
    rate_wpm: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    seed: int = 0,
) -> Synthesis:
    """Speak `text` with eSpeak voice `voice` (e.g. "en-us+m3"); deterministic in its arguments.

    rate_wpm: 80-450 words per minute; pitch and pitch_range: 0-100 (eSpeak's scale);
    seed: eSpeak's noise generator (breathy variants)."""
    if not 80 <= rate_wpm <= 450:
        raise ValueError(f"rate_wpm must be in 80..450, got {rate_wpm}")
    for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= value <= 100:
            raise ValueError(f"{name} must be in 0..100, got {value}")
    params = {
        _PARAM_RATE: int(rate_wpm),
        _PARAM_VOLUME: 100,
        _PARAM_PITCH: int(pitch),
        _PARAM_RANGE: int(pitch_range),
        _PARAM_WORDGAP: 0,
    }
    engine = _engine()
    args = (text, voice, params, int(seed) % (2**31))
    if hasattr(os, "fork"):
        return _run_in_child(engine, *args)
    # No fork (Windows): output then depends on what this process synthesised before.
    log.debug("no os.fork on %s: eSpeak output is not isolated per utterance", sys.platform)
    return engine.run(*args)
