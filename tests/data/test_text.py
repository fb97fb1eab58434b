"""CTC text: transcript files, the character vocabulary (as transformers loads it), greedy
decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hubertlab.data.text import (
    CharVocab,
    build_vocab,
    ctc_labels,
    greedy_ctc_decode,
    greedy_ctc_texts,
    load_vocab,
    normalize_text,
    read_transcripts,
    write_transcripts,
)

TEXTS = {
    "spk/a": "The old man painted the door.",
    "spk/b": "Le vieux marin, et puis l'enfant à la fête!",
    "c": "El niño comió   pan",
}


def test_transcripts_tsv_and_jsonl(tmp_path: Path):
    write_transcripts(TEXTS, tmp_path / "t.tsv")
    # Written as given (runs of spaces kept: a CTC decode's double space is part of its text).
    assert read_transcripts(tmp_path / "t.tsv") == TEXTS
    write_transcripts({"a": "one\ttwo\r\nthree  four"}, tmp_path / "breaks.tsv")
    assert read_transcripts(tmp_path / "breaks.tsv") == {"a": "one two  three  four"}
    lines = [json.dumps({"fileid": k, "text": v}) for k, v in TEXTS.items()]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    assert read_transcripts(tmp_path / "t.jsonl") == TEXTS
    (tmp_path / "bad.tsv").write_text("a\thello\nb hello\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected fileid<TAB>text"):
        read_transcripts(tmp_path / "bad.tsv")
    (tmp_path / "dup.jsonl").write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(ValueError, match=r"dup.jsonl:2: fileid 'spk/a' appears twice"):
        read_transcripts(tmp_path / "dup.jsonl")


def test_normalize_and_vocab():
    assert normalize_text("Le vieux marin, et puis l'enfant à la fête!") == (
        "le vieux marin et puis l enfant à la fête"
    )
    vocab = build_vocab(TEXTS.values())
    assert vocab.tokens[:3] == ("<pad>", "<unk>", "|") and vocab.blank_id == 0
    assert {"à", "ê", "ñ", "ó"} <= set(vocab.tokens) and "," not in vocab.tokens
    text = normalize_text(TEXTS["spk/a"])
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text and ids.count(2) == text.count(" ")
    assert vocab.encode("zq") == [vocab.tokens.index("z") if "z" in vocab.tokens else 1, 1]
    labels, lengths = ctc_labels(["The door.", "Le marin"], vocab)
    assert lengths.tolist() == [8, 8] and labels.shape == (2, 8)
    labels, lengths = ctc_labels(["a", "The old man"], vocab)
    assert labels[0, 1:].tolist() == [-100] * 10 and vocab.decode(labels[1]) == "the old man"
    with pytest.raises(ValueError, match="must start with"):
        CharVocab(("a", "<pad>", "<unk>", "|"))


def test_vocab_loads_in_transformers(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    vocab = build_vocab(TEXTS.values())
    vocab.save(tmp_path / "tok")
    assert load_vocab(tmp_path / "tok") == vocab
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert len(tokenizer) == len(vocab) and tokenizer.pad_token_id == 0
    text = normalize_text(TEXTS["spk/b"])
    assert tokenizer(text).input_ids == vocab.encode(text)
    # CTC frames: repeats collapse, blanks separate real repeats (the "ll" of "ella")
    ids = vocab.encode("ella mira")
    frames = []
    for i, prev in zip(ids, [None, *ids[:-1]], strict=True):
        frames += [0, i, i] if i == prev else [i, i, 0]
    log_probs = np.full((len(frames), len(vocab)), -10.0, dtype=np.float32)
    log_probs[np.arange(len(frames)), frames] = 0.0
    assert greedy_ctc_decode(log_probs) == ids
    assert vocab.decode(greedy_ctc_decode(log_probs)) == "ella mira"
    assert tokenizer.decode(np.asarray(frames)) == "ella mira"
    # a padded batch: the second item stops after its 3 frames ("e" "e" blank)
    batch = np.stack([log_probs, log_probs])
    assert greedy_ctc_texts(batch, [len(frames), 3], vocab) == ["ella mira", "e"]


def test_load_vocab_errors(tmp_path: Path):
    (tmp_path / "v.json").write_text(json.dumps({"<pad>": 0, "<unk>": 1, "|": 3}))
    with pytest.raises(ValueError, match=r"v.json: expected \{token: id\}"):
        load_vocab(tmp_path / "v.json")
