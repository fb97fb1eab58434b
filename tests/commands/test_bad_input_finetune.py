"""Bad input for the fine-tuning side (predict, validate, export, finetune, score), through the
CLI where a user meets it: one line naming the flag, file, row or key; no confident output
made from nothing. Checkpoints are built in-process (no training)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from hubertlab.cli import main
from hubertlab.config import to_dict
from hubertlab.data.audio import write_audio
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.data.rttm import VTC_CLASSES
from hubertlab.data.text import SPECIAL_TOKENS
from hubertlab.models.checkpoint import from_pretrained
from hubertlab.models.finetune import FinetuneModelConfig, build_finetune_model
from hubertlab.models.safe_load import CheckpointError
from hubertlab.train import checkpoint as ckpt
from tests.finetune_fixtures import write_toml
from tests.models.test_finetune import BACKBONE

CTC_TOKENS = (*SPECIAL_TOKENS, "a", "b", "c")


def _finetuned(path: Path, task: str, outputs: tuple[str, ...], layer) -> Path:
    torch.manual_seed(0)
    cfg = FinetuneModelConfig(task=task, outputs=outputs, backbone=BACKBONE, layer=layer)
    model = build_finetune_model(cfg)
    train_config = {"finetune": {"task": task, "encoder": "enc/pretrained"},
                    "data": {"window_seconds": 1.0}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_config": to_dict(cfg), "model_kind": task,
                "step": 1, "train_config": train_config}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two 1.5 s recordings with a manifest, transcripts, RTTM and UEM, and a VTC and a CTC
    fine-tuning checkpoint (each alone in its run's checkpoints/ folder)."""
    root = tmp_path_factory.mktemp("ft")
    rng = np.random.default_rng(0)
    rows = []
    for name in ("a", "b"):
        write_audio(root / f"{name}.wav", (0.1 * rng.standard_normal(24000)).astype(np.float32))
        rows.append(ManifestRow(fileid=name, path=f"{name}.wav", num_samples=24000))
    write_manifest(rows, root / "manifest.csv")
    (root / "transcripts.tsv").write_text("a\tab ba\nb\tcab\n")
    (root / "ref.rttm").write_text("SPEAKER a 1 0.1 0.5 <NA> <NA> FEM <NA> <NA>\n")
    (root / "all.uem").write_text("a 1 0.0 1.5\nb 1 0.0 1.5\n")
    _finetuned(root / "vtc" / "checkpoints" / "step_00000001.pt", "vtc", VTC_CLASSES, "weighted")
    _finetuned(root / "ctc" / "checkpoints" / "step_00000001.pt", "ctc", CTC_TOKENS, 2)
    return root


def _fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _vtc_ckpt(data: Path) -> str:
    return str(data / "vtc" / "checkpoints" / "step_00000001.pt")


# --- predict: flags ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--min-duration", "nan"),
        ("--min-gap", "nan"),
        ("--min-gap", "-1"),
        ("--window-seconds", "-4"),
        ("--window-seconds", "nan"),
        ("--window-seconds", "inf"),
        ("--overlap", "1"),
        ("--batch", "0"),
    ],
)
def test_predict_refuses_bad_numbers_before_any_work(data, tmp_path, capsys, flag, value):
    out = tmp_path / "out.rttm"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", _vtc_ckpt(data), str(data / "manifest.csv"), str(out), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err and repr(value) in err, err
    assert not out.exists()


def test_ranged_float_bounds():
    import argparse

    from hubertlab.commands.args import ranged_float, ranged_int

    parse = ranged_float(low=0, high=1, high_open=True)
    assert parse("0") == 0.0 and parse("0.5") == 0.5
    for bad in ("1", "-0.1", "nan", "-inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be in \[1, inf\]"):
        ranged_int(low=1)("0")


# --- predict: rows that contradict the audio -----------------------------------------------


def _manifest(data: Path, tmp_path: Path, **row) -> Path:
    fields = {"fileid": "a", "path": str(data / "a.wav"), "num_samples": 24000, **row}
    write_manifest([ManifestRow(**fields)], tmp_path / "m.csv")
    return tmp_path / "m.csv"


def test_predict_refuses_rows_that_contradict_the_audio(data, tmp_path, capsys):
    out = str(tmp_path / "out.rttm")
    twice = _manifest(data, tmp_path, num_samples=48000)
    _fails(capsys, ["predict", _vtc_ckpt(data), str(twice), out], "m.csv: row 1 ('a')",
           "has 24000 samples, the manifest says 48000")  # fmt: skip
    span = _manifest(data, tmp_path, num_samples=8000, start=20000)  # past the end
    _fails(capsys, ["predict", _vtc_ckpt(data), str(span), out], "row 1 ('a')", "a span")
    write_audio(tmp_path / "short.wav", np.zeros(100, np.float32))
    short = _manifest(data, tmp_path, path=str(tmp_path / "short.wav"), num_samples=100)
    _fails(capsys, ["predict", _vtc_ckpt(data), str(short), out], "row 1 ('a')",
           "too short: 100 samples")  # fmt: skip
    assert not Path(out).exists()
    assert main(["predict", _vtc_ckpt(data), str(data / "manifest.csv"), out]) == 0


def test_vtc_training_refuses_a_row_claiming_more_audio(data, tmp_path, capsys):
    tables = _vtc_tables(data, tmp_path)
    tables["data"]["train_manifest"] = _manifest(data, tmp_path, num_samples=48000)
    config = write_toml(tmp_path / "c.toml", tables)
    _fails(capsys, ["finetune", str(config)], "m.csv: row 1 ('a')", "the manifest says 48000")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ctc_predict_and_training_refuse_rows_that_contradict_the_audio(data, tmp_path, capsys):
    """CTC used to transcribe the 1.5 s the file holds for a row claiming 3 s (exit 0)."""
    ctc, out = str(data / "ctc" / "checkpoints" / "step_00000001.pt"), tmp_path / "out.tsv"
    twice = _manifest(data, tmp_path, num_samples=48000)
    _fails(capsys, ["predict", ctc, str(twice), str(out)], "m.csv: row 1 ('a')",
           "has 24000 samples, the manifest says 48000")  # fmt: skip
    half = _manifest(data, tmp_path, num_samples=12000)
    _fails(capsys, ["predict", ctc, str(half), str(out)], "the manifest says 12000")
    span = _manifest(data, tmp_path, num_samples=8000, start=20000)
    _fails(capsys, ["predict", ctc, str(span), str(out)], "m.csv: row 1 ('a')",
           "span [20000, 28000) runs past the end", "(24000 samples)")  # fmt: skip
    assert not out.exists()
    twice = _manifest(data, tmp_path, num_samples=48000)  # _manifest rewrites m.csv
    config = _ctc_config(data, tmp_path, train_manifest=twice)
    _fails(capsys, ["finetune", str(config)], "m.csv: row 1 ('a')", "the manifest says 48000")
    assert not (tmp_path / "run" / "checkpoints").exists()
    inside = _manifest(data, tmp_path, num_samples=8000, start=16000)  # a span is fine
    assert main(["predict", ctc, str(inside), str(out)]) == 0


# --- UEM that excludes everything ----------------------------------------------------------


def _vtc_tables(data: Path, tmp_path: Path) -> dict[str, dict]:
    return {
        "finetune": {
            "task": "vtc",
            "encoder": "random",
            "preset": "tiny",
            "overrides": {
                "conv_channels": [16] * 7,
                "hidden_dim": 32,
                "num_layers": 1,
                "num_heads": 2,
                "ffn_dim": 32,
                "pos_conv_kernel": 16,
                "pos_conv_groups": 4,
            },
        },  # fmt: skip
        "data": {
            "train_manifest": data / "manifest.csv",
            "dev_manifest": data / "manifest.csv",
            "train_rttm": data / "ref.rttm",
            "dev_rttm": data / "ref.rttm",
            "window_seconds": 1.0,
            "batch_size": 2,
            "num_workers": 0,
        },  # fmt: skip
        "optim": {"lr": 1e-3, "warmup_steps": 0, "max_steps": 1, "schedule": "constant"},
        "run": {
            "out_dir": tmp_path / "run",
            "precision": "fp32",
            "progress_bar": False,
            "num_threads": 1,
        },  # fmt: skip
    }


@pytest.mark.parametrize("key", ["train_uem", "dev_uem"])
def test_a_uem_outside_every_recording_is_refused(data, tmp_path, capsys, caplog, key):
    """It used to train at loss 0.0 and tune thresholds to 0.5 with f1 1.0."""
    (tmp_path / "far.uem").write_text("a 1 100.0 200.0\nb 1 100.0 200.0\n")
    tables = _vtc_tables(data, tmp_path)
    tables["data"][key] = tmp_path / "far.uem"
    config = write_toml(tmp_path / "c.toml", tables)
    _fails(capsys, ["finetune", str(config)], f"{tmp_path / 'far.uem'}: no frame of the 2 "
           "recordings", "lies in its scored regions")  # fmt: skip
    assert f"{tmp_path / 'far.uem'}: no frame of b lies in its scored regions" in caplog.text


def test_empty_path_and_other_task_keys_name_the_key(data, tmp_path, capsys):
    tables = _vtc_tables(data, tmp_path)
    tables["data"]["train_uem"] = ""
    _fails(capsys, ["finetune", str(write_toml(tmp_path / "e.toml", tables))],
           "e.toml.data.train_uem: empty path")  # fmt: skip
    del tables["data"]["train_uem"]
    tables["data"]["max_utterance_seconds"] = 90.0  # ctc only (and > batch_seconds)
    _fails(
        capsys,
        ["finetune", str(write_toml(tmp_path / "k.toml", tables))],
        "k.toml: data.max_utterance_seconds: a key of task 'ctc'",
        "task is 'vtc'",
    )
    del tables["data"]["max_utterance_seconds"]
    tables["finetune"]["vocab"] = "v.json"
    _fails(capsys, ["finetune", str(write_toml(tmp_path / "v.toml", tables))],
           "finetune.vocab: a key of task 'ctc'")  # fmt: skip


# --- validate: another task's checkpoint ---------------------------------------------------


def _ctc_config(data: Path, tmp_path: Path, name: str = "ctc.toml", **data_keys) -> Path:
    return write_toml(tmp_path / name, {
        "finetune": {"task": "ctc", "encoder": "random", "preset": "tiny"},
        "data": {"train_manifest": data / "manifest.csv", "dev_manifest": data / "manifest.csv",
                 "train_transcripts": data / "transcripts.tsv",
                 "dev_transcripts": data / "transcripts.tsv", "num_workers": 0, **data_keys},
        "run": {"out_dir": tmp_path / "run", "precision": "fp32"},
    })  # fmt: skip


def test_validate_refuses_a_checkpoint_of_another_task(data, tmp_path, capsys):
    """A VTC run validated with a CTC config used to print a CER."""
    config = _ctc_config(data, tmp_path)
    out = tmp_path / "v.jsonl"
    _fails(capsys, ["validate", str(data / "vtc"), "--config", str(config), "--out", str(out)],
           "step_00000001.pt: a 'vtc' checkpoint", f"{config} is a 'ctc' config")  # fmt: skip
    assert not out.exists()
    # Same task, another head: the config's vocabulary is not the checkpoint's.
    (tmp_path / "other.tsv").write_text("a\tab cd\nb\tdab\n")
    other = _ctc_config(data, tmp_path, "o.toml", train_transcripts=tmp_path / "other.tsv")
    _fails(capsys, ["validate", str(data / "ctc"), "--config", str(other), "--out", str(out)],
           "its head has the outputs")  # fmt: skip
    assert main(["validate", str(data / "ctc"), "--config", str(config), "--out", str(out)]) == 0


# --- unsafe or damaged checkpoints ---------------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo must never run",))


def test_predict_and_validate_refuse_unsafe_checkpoints_without_torch_advice(
    data, tmp_path, capsys
):
    evil = tmp_path / "run" / "checkpoints" / "step_00000001.pt"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=2))
    out = str(tmp_path / "out.rttm")
    err = _fails(capsys, ["predict", str(evil), str(data / "manifest.csv"), out], str(evil),
                 "refusing to unpickle")  # fmt: skip
    assert "weights_only" not in err
    cut = tmp_path / "cut.pt"
    cut.write_bytes(Path(_vtc_ckpt(data)).read_bytes()[:5000])
    err = _fails(capsys, ["predict", str(cut), str(data / "manifest.csv"), out], str(cut),
                 "corrupt")  # fmt: skip
    assert "weights_only" not in err
    err = _fails(capsys, ["validate", str(tmp_path / "run"), "--config",
                          str(_ctc_config(data, tmp_path))], "no checkpoint could be read",
                 "refusing to unpickle")  # fmt: skip
    assert "weights_only" not in err


def test_a_finetuning_checkpoint_where_a_pretrained_model_is_read(data, tmp_path, capsys):
    with pytest.raises(CheckpointError, match=r"a fine-tuning checkpoint \(vtc\), not a "
                       r"pretrained model: give the encoder it was fine-tuned from "
                       r"\(enc/pretrained\)"):  # fmt: skip
        from_pretrained(_vtc_ckpt(data))
    tables = _vtc_tables(data, tmp_path)
    tables["finetune"] = {"task": "vtc", "encoder": _vtc_ckpt(data)}
    _fails(capsys, ["finetune", str(write_toml(tmp_path / "c.toml", tables))],
           "a fine-tuning checkpoint (vtc)")  # fmt: skip


# --- writes: full disk, permissions --------------------------------------------------------


def test_a_full_disk_while_checkpointing_names_the_path(tmp_path, monkeypatch):
    """torch's zip writer turned ENOSPC into a RuntimeError chained to it (two tracebacks)."""
    from hubertlab import fileio

    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullDisk(f) if "w" in mode else f

    monkeypatch.setattr(fileio, "open", full_disk_open, raising=False)
    path = tmp_path / "step_00000002.pt"
    with pytest.raises(OSError, match=f"disk full while writing {path}") as info:
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(10000)}})
    assert info.value.errno == errno.ENOSPC
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def test_exports_get_the_umask_permissions(data, tmp_path, capsys, umask_022):
    """safetensors wrote model.safetensors 0600."""
    pytest.importorskip("transformers")
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    cfg = HubertConfig(backbone=BACKBONE, num_units=(8,))
    pretrained = tmp_path / "step_1.pt"
    torch.save({"model": HubertModel(cfg).state_dict(), "model_config": to_dict(cfg)}, pretrained)
    ctc = str(data / "ctc" / "checkpoints" / "step_00000001.pt")
    for source, to in ((pretrained, "hubertlab"), (pretrained, "hf"), (ctc, "hf")):
        out = tmp_path / f"{Path(source).parent.name}-{to}"
        assert main(["export", str(source), str(out), "--to", to]) == 0
        modes = _modes(out)
        assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    capsys.readouterr()


# --- CTC vocabularies ----------------------------------------------------------------------


def test_ctc_refuses_empty_vocabularies_and_warns_on_unknown_characters(data, tmp_path, capsys,
                                                                          caplog):  # fmt: skip
    (tmp_path / "punct.tsv").write_text("a\t?!\nb\t...\n")
    config = _ctc_config(data, tmp_path, train_transcripts=tmp_path / "punct.tsv")
    _fails(capsys, ["finetune", str(config)], f"{tmp_path / 'punct.tsv'}: no character")
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(SPECIAL_TOKENS)}))
    text = config.read_text().replace('preset = "tiny"', f'preset = "tiny"\nvocab = '
                                      f'"{tmp_path / "vocab.json"}"')  # fmt: skip
    (tmp_path / "v.toml").write_text(text)
    _fails(capsys, ["finetune", str(tmp_path / "v.toml")], "vocab.json: no character token")
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(
        (*SPECIAL_TOKENS, "x", "y"))}))  # fmt: skip
    (tmp_path / "v2.toml").write_text(text.replace("punct.tsv", "../transcripts.tsv"))
    (tmp_path / "v2.toml").write_text(
        text.replace(str(tmp_path / "punct.tsv"), str(data / "transcripts.tsv"))
    )
    _fails(
        capsys,
        ["finetune", str(tmp_path / "v2.toml")],
        "transcripts.tsv: none of the 7 target characters is in the vocabulary (xy)",
    )

    from hubertlab.data.text import CharVocab
    from hubertlab.data.utterances import check_unknown_characters

    vocab = CharVocab((*SPECIAL_TOKENS, "a", "b"))
    ids = [vocab.encode("ab ba ab ba ab ba ab ba ab ba c")]  # 1 of 21 characters: 4.8 %
    check_unknown_characters(ids, vocab, "t.tsv")
    assert "t.tsv" not in caplog.text
    check_unknown_characters([vocab.encode("ab ba c")], vocab, "t.tsv")
    assert "t.tsv: 1 of 5 target characters (20.0 %) are not in the vocabulary" in caplog.text
