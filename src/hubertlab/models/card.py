"""The model card (README.md) that `hubertlab export --to hf` writes beside the weights: YAML
front matter the Hugging Face hub reads, then what the model is, what it was trained on and
how, its ABX scores when they were measured, and how to load it.

What the card says comes from the export's source: a training checkpoint keeps its training
config, step and counters; a pipeline iteration's model folder (iteration<k>/model) has its
run beside it (iteration<k>/train/config.json, .../checkpoints/best.json) and its ABX scores
(iteration<k>/abx/abx.json). Anything the source does not record is written as "not recorded",
never guessed.

The licence is the user's to choose (of the model and of the audio it learned from): the front
matter carries it as a YAML comment to fill in, which the hub reads as "no licence yet"."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.manifest import read_manifest
from hubertlab.models.config import BackboneConfig
from hubertlab.models.safe_load import safe_load

CARD_NAME = "README.md"
TAGS = ("audio", "speech", "hubert", "self-supervised", "hubertlab")
LICENCE_LINE = "# license: <fill in the licence of this model and of its training audio>"
NOT_RECORDED = "not recorded"
_ITERATION_DIR = re.compile(r"^iteration(\d+)$")


@dataclass(frozen=True)
class Provenance:
    """What the export's source records about how the model was made (None: not recorded)."""

    train: dict[str, Any] | None = None  # the run's resolved config (TrainConfig or fine-tuning)
    step: int | None = None  # the step of the exported weights
    audio_seen_s: float | None = None  # audio the run went through, repeats included
    iteration: int | None = None  # the pipeline iteration whose model this is
    abx: dict[str, Any] | None = None  # abx.json of the model (scores, best)
    baseline_abx: dict[str, Any] | None = None  # the pipeline's MFCC baseline abx.json


def read_provenance(source: str | Path) -> Provenance:
    """What `source` (the path given to export) records; an empty Provenance for the formats
    that keep none (transformers dirs, fairseq and torchaudio files)."""
    source = Path(source)
    if source.is_file() and source.suffix == ".pt":
        state = safe_load(source)
        if not isinstance(state, dict) or not isinstance(state.get("train_config"), dict):
            return Provenance()
        counters = state.get("counters") or {}
        return Provenance(
            train=state["train_config"],
            step=state.get("step"),
            audio_seen_s=counters.get("audio_seconds"),
        )
    # A pipeline iteration: iteration<k>/{model, train, abx}; the baseline is beside them.
    # Any other folder keeps nothing we could trust to be about these weights.
    root = source.parent
    match = _ITERATION_DIR.match(root.name)
    if not (source.is_dir() and source.name == "model" and match):
        return Provenance()
    run = _read_json(root / "train" / "config.json") or {}
    best = _read_json(root / "train" / "checkpoints" / "best.json") or {}
    return Provenance(
        train=run.get("train"),
        step=best.get("step"),
        iteration=int(match.group(1)),
        abx=_read_json(root / "abx" / "abx.json"),
        baseline_abx=_read_json(root.parent / "baseline" / "abx.json"),
    )


def write_model_card(
    out_dir: str | Path, backbone: BackboneConfig, provenance: Provenance, *, ctc: bool = False
) -> Path:
    """Write README.md into the export folder `out_dir` (its weights already there); `ctc`:
    a HubertForCTC export (a fine-tuned model) rather than a HubertModel encoder."""
    out_dir = Path(out_dir)
    path = out_dir / CARD_NAME
    path.write_text(model_card(out_dir, backbone, provenance, ctc=ctc), encoding="utf-8")
    return path


def model_card(
    out_dir: Path, backbone: BackboneConfig, provenance: Provenance, *, ctc: bool = False
) -> str:
    """The card's text (see write_model_card)."""
    title = "HuBERT fine-tuned for speech recognition (CTC)" if ctc else "HuBERT speech encoder"
    sections = [
        _front_matter(ctc=ctc),
        f"# {title}\n\nTrained with hubertlab (self-supervised speech models on your own audio).",
        _architecture(out_dir, backbone),
        _training(provenance),
        _abx(provenance),
        _usage(out_dir.name, backbone, _example_layer(backbone, provenance), ctc=ctc),
        "## Licence\n\nNot set: add a `license:` line to the front matter above (the licence "
        "of the model and of the audio it was trained on).",
    ]
    return "\n\n".join(sections) + "\n"


def _front_matter(*, ctc: bool) -> str:
    pipeline_tag = "automatic-speech-recognition" if ctc else "feature-extraction"
    tags = [*TAGS, "ctc"] if ctc else list(TAGS)
    lines = ["---", "library_name: transformers", f"pipeline_tag: {pipeline_tag}", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    return "\n".join([*lines, LICENCE_LINE, "---"])


def _architecture(out_dir: Path, b: BackboneConfig) -> str:
    layout = b.frame_layout
    cnn = (
        f"{len(b.conv_channels)} conv layers, {b.conv_dim} channels, {b.conv_norm} norm: one "
        f"frame of {layout.window / SAMPLE_RATE * 1000:g} ms every "
        f"{layout.hop / SAMPLE_RATE * 1000:g} ms ({SAMPLE_RATE / layout.hop:g} Hz) of 16 kHz audio"
    )
    rows = [
        ("Transformer layers", str(b.num_layers)),
        ("hidden / FFN dim", f"{b.hidden_dim} / {b.ffn_dim}"),
        ("attention heads", str(b.num_heads)),
        ("layer norm", "pre-LN" if b.pre_ln else "post-LN"),
        ("CNN feature encoder", cnn),
        ("waveform normalised", "yes (zero mean, unit variance)" if b.normalize_waveform else "no"),
        ("parameters (this folder)", _parameters(out_dir)),
    ]
    return "## Architecture\n\n" + _table(("", "value"), rows)


def _parameters(out_dir: Path) -> str:
    """Parameters in the exported weights (every *.safetensors shard, read without loading)."""
    total = 0
    for path in sorted(out_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = f.get_slice(key).get_shape()
                total += int(_product(shape))
    return f"{total / 1e6:.1f}M ({total:,})" if total else NOT_RECORDED


def _product(shape: list[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _training(p: Provenance) -> str:
    if p.train is None:
        return "## Training\n\nThe source of this export records no training run: not recorded."
    data, optim = p.train.get("data", {}), p.train.get("optim", {})
    model, finetune = p.train.get("model", {}), p.train.get("finetune")
    if finetune is not None:
        recipe = (
            f"fine-tuning, task {finetune.get('task', '?')}, encoder `{finetune.get('encoder')}`"
        )
    else:
        kind, preset = model.get("kind", "hubert"), model.get("preset")
        recipe = f"pretraining, objective {kind}, preset {preset}"
    steps = optim.get("max_steps")
    rows = [
        ("training audio", _training_hours(data)),
        ("recipe", recipe),
        ("steps", _steps(p.step, steps)),
        ("peak lr, schedule", f"{optim.get('lr')}, {optim.get('schedule')}"),
        ("batch", f"{data.get('batch_seconds')} s of audio per GPU (rank)"),
    ]
    if data.get("num_units"):
        rows.append(("units (k of each k-means)", ", ".join(map(str, data["num_units"]))))
    if p.iteration is not None:
        rows.append(("pipeline iteration", str(p.iteration)))
    if model.get("from_pretrained"):
        rows.append(("initialised from", f"`{model['from_pretrained']}`"))
    if p.audio_seen_s:
        rows.append(("audio seen (repeats included)", f"{p.audio_seen_s / 3600:.2f} h"))
    return "## Training\n\n" + _table(("", "value"), rows)


def _training_hours(data: dict[str, Any]) -> str:
    """Hours of the training manifest (num_samples summed), or why they are not known."""
    manifest = data.get("train_manifest")
    if not manifest:
        return "streamed from tar shards: hours " + NOT_RECORDED
    try:
        rows = read_manifest(manifest)
    except (OSError, ValueError):  # moved or deleted since training
        return f"{NOT_RECORDED} (`{manifest}` is no longer readable)"
    hours = sum(row.num_samples for row in rows) / SAMPLE_RATE / 3600
    return f"{hours:.2f} h ({len(rows)} utterances)"


def _steps(step: int | None, max_steps: int | None) -> str:
    if step is None:
        return f"{max_steps} planned (the step of these weights is {NOT_RECORDED})"
    return f"{step} of {max_steps}"


def _abx(p: Provenance) -> str:
    if p.abx is None:
        return "## ABX\n\nNo ABX was measured for this model."
    rows = [_abx_row(s) for s in p.abx.get("scores", [])]
    rows += [_abx_row(s) for s in (p.baseline_abx or {}).get("scores", [])]
    best = p.abx.get("best") or {}
    text = (
        "## ABX\n\nPhone discriminability of each layer's features on the held-out corpus "
        "(error %, lower is better; within and across speakers).\n\n"
        + _table(("features", "within %", "across %"), rows)
    )
    if best:
        text += f"\n\nBest: {best.get('name')} (by {best.get('criterion', 'ABX')})."
    return text


def _abx_row(score: dict[str, Any]) -> tuple[str, str, str]:
    def error(mode: str) -> str:
        return f"{score[mode]['error_percent']:.2f}" if mode in score else "-"

    return score.get("name", "?"), error("within"), error("across")


def _example_layer(b: BackboneConfig, p: Provenance) -> int:
    """The layer the usage example reads: the best by ABX when measured, else the middle."""
    best = (p.abx or {}).get("best") or {}
    return best["layer"] if isinstance(best.get("layer"), int) else b.num_layers // 2


def _usage(name: str, b: BackboneConfig, layer: int, *, ctc: bool) -> str:
    norm = (
        "\nwav = (wav - wav.mean()) / (wav.std() + 1e-5)  # trained on standardised waveforms"
        if b.normalize_waveform
        else ""
    )
    if ctc:
        code = (
            "import soundfile as sf\n"
            "from transformers import HubertForCTC, Wav2Vec2Processor\n\n"
            f'model = HubertForCTC.from_pretrained("{name}").eval()\n'
            f'processor = Wav2Vec2Processor.from_pretrained("{name}")\n'
            'wav, sr = sf.read("speech.wav")  # 16 kHz mono\n'
            'inputs = processor(wav, sampling_rate=16000, return_tensors="pt")\n'
            "print(processor.batch_decode(model(**inputs).logits.argmax(-1)))"
        )
        ours = (
            "With hubertlab, transcribe with the training checkpoint this was exported from:\n"
            "`hubertlab predict CHECKPOINT MANIFEST OUT.tsv`."
        )
    else:
        code = (
            "import soundfile as sf, torch\n"
            "from transformers import HubertModel\n\n"
            f'model = HubertModel.from_pretrained("{name}").eval()\n'
            'wav, sr = sf.read("speech.wav", dtype="float32")  # 16 kHz mono\n'
            f"wav = torch.from_numpy(wav)[None]{norm}\n"
            "out = model(wav, output_hidden_states=True)\n"
            f"features = out.hidden_states[{layer}]  # (batch, frame, hidden_dim); "
            "[0]: before the first layer"
        )
        ours = (
            "With hubertlab (features of every layer, k-means units, fine-tuning):\n\n"
            "```python\nfrom hubertlab.models.checkpoint import from_pretrained\n\n"
            f'model = from_pretrained("{name}")  # a hubertlab HubertModel, no pretraining head\n'
            "```"
        )
    return (
        f"## How to use\n\n`{name}` is this folder (or its hub repo id once uploaded).\n\n"
        f"```python\n{code}\n```\n\n{ours}"
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
