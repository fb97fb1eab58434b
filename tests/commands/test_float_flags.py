"""Every float flag of every command is finite and in range before any work: NaN passes every
comparison (`nan <= 0` is false) and inf every lower bound, so each is checked by
hubertlab.numbers (argparse types, exit 2, or a command's own check, exit 1), naming the flag."""

from __future__ import annotations

import pytest

from hubertlab.cli import main

# Positional arguments that need not exist: a bad flag must stop the command before any read.
POSITIONALS = {
    "predict": ["ckpt.pt", "m.csv", "out.rttm"],
    "features": ["m.csv", "store", "--kind", "mfcc"],
    "transcribe": ["m.csv", "km", "units", "--kind", "mfcc"],
    "abx": ["abx.item", "--mfcc", "--out", "abx"],
    "kmeans": ["store", "km"],
    "manifest": ["wav", "m.csv"],
    "demo-corpus": ["corpus"],
    "demo": ["demo"],
    "curate": ["vad", "m.csv", "curated", "--hours", "1"],
    "segments": ["vad", "m.csv", "spans.csv"],
    "init": ["audio", "out"],
}

CASES = [
    ("predict", "--window-seconds", "nan"),
    ("predict", "--overlap", "1"),
    ("predict", "--min-gap", "-1"),
    ("predict", "--min-duration", "inf"),
    ("features", "--chunk-seconds", "0"),
    ("features", "--chunk-seconds", "-inf"),
    ("features", "--context-seconds", "nan"),
    ("features", "--context-seconds", "-1"),
    ("transcribe", "--chunk-seconds", "nan"),
    ("transcribe", "--context-seconds", "-1"),
    ("abx", "--frame-shift", "0"),
    ("abx", "--frame-shift", "nan"),
    ("kmeans", "--fraction", "nan"),
    ("kmeans", "--max-memory-gb", "inf"),
    ("kmeans", "--max-memory-gb", "nan"),
    ("kmeans", "--tol", "nan"),
    ("manifest", "--valid-fraction", "nan"),
    ("demo-corpus", "--minutes", "nan"),
    ("demo-corpus", "--hours", "-1"),
    ("demo-corpus", "--recording-minutes", "inf"),
    ("demo", "--train-minutes", "nan"),
    ("demo", "--eval-minutes", "0"),
    ("demo", "--vtc-minutes", "inf"),
    ("demo", "--vtc-test-minutes", "-1"),
    ("curate", "--hours", "nan"),
    ("curate", "--min-density", "2"),
    ("curate", "--chunk-seconds", "inf"),
    ("curate", "--min-speech-seconds", "nan"),
    ("segments", "--merge-gap-seconds", "-1"),
    ("segments", "--min-seconds", "inf"),
    ("segments", "--max-seconds", "nan"),
    ("init", "--eval-minutes", "nan"),
    ("init", "--eval-minutes", "0"),
    ("init", "--hours", "nan"),
    ("init", "--hours", "0"),
]


@pytest.mark.parametrize(("command", "flag", "value"), CASES)
def test_bad_float_flags_are_refused_naming_the_flag(
    tmp_path, monkeypatch, capsys, command, flag, value
):
    monkeypatch.chdir(tmp_path)
    try:
        code = main([command, *POSITIONALS[command], flag, value])
    except SystemExit as e:  # argparse's refusal
        code = e.code
    assert code not in (0, None)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in last and "Traceback" not in last, last
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_every_float_flag_is_covered():
    """A new `type=float` flag must join CASES (or use ranged_float / checked_float)."""
    import argparse

    from hubertlab.cli import COMMANDS, build_parser

    covered = {(c, f) for c, f, _ in CASES}
    for command in COMMANDS:
        parser = build_parser([command])
        (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for action in subparsers.choices[command]._actions:
            # builtin float and ranged_float's parser are both named "float"
            if getattr(action.type, "__name__", None) == "float":
                flag = max(action.option_strings, key=len)
                assert (command, flag) in covered, (command, flag)
