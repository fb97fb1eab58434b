"""Text for CTC speech recognition: transcript files, a character vocabulary saved as the
vocab.json that transformers' Wav2Vec2CTCTokenizer loads, encoding and greedy CTC decoding.

Transcripts: TSV `fileid<TAB>text` (an optional header line `fileid<TAB>text`) or JSONL
{"fileid", "text"}. Vocabulary: "<pad>" = 0 is the CTC blank (HubertForCTC takes the pad id as
blank), "<unk>" = 1 for characters not seen in training, "|" = 2 stands for the space.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubertlab.fileio import atomic_open, atomic_write_json

PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"
SPECIAL_TOKENS = (PAD, UNK, WORD_DELIMITER)
VOCAB_FILE = "vocab.json"
# What would end a TSV field or line when read back (text-mode reading splits at \r too).
_LINE_BREAKS = re.compile(r"[\t\r\n]")
TOKENIZER_CONFIG = {
    "tokenizer_class": "Wav2Vec2CTCTokenizer",
    "pad_token": PAD,
    "unk_token": UNK,
    "word_delimiter_token": WORD_DELIMITER,
    "bos_token": None,
    "eos_token": None,
    "do_lower_case": False,
}


def read_transcripts(path: str | Path) -> dict[str, str]:
    """fileid -> text from a .tsv or .jsonl file; a repeated fileid or a bad row is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such transcripts file")
    texts: dict[str, str] = {}
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            where = f"{path}:{number}"
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if jsonl:
                try:
                    row = json.loads(line)
                    fileid, text = row["fileid"], row["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f'{where}: expected {{"fileid", "text"}}: {e}') from None
                if not isinstance(fileid, str) or not isinstance(text, str):
                    raise ValueError(f"{where}: fileid and text must be strings")
            else:
                if "\t" not in line:
                    raise ValueError(f"{where}: expected fileid<TAB>text")
                fileid, text = line.split("\t", 1)
                if number == 1 and (fileid, text) == ("fileid", "text"):
                    continue
            if not fileid:
                raise ValueError(f"{where}: empty fileid")
            if fileid in texts:
                raise ValueError(f"{where}: fileid {fileid!r} appears twice")
            texts[fileid] = text
    return texts


def write_transcripts(texts: Mapping[str, str], path: str | Path) -> None:
    """TSV with a header; tabs and line breaks inside a text become spaces, and nothing else
    changes: a decode's double space (a word delimiter repeated across a blank) stays, as
    HubertForCTC's processor writes it."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("fileid\ttext\n")
        for fileid, text in texts.items():
            f.write(f"{fileid}\t{_LINE_BREAKS.sub(' ', text)}\n")


def normalize_text(text: str) -> str:
    """Lower case, punctuation and symbols removed (letters with accents kept), one space
    between words: what both the vocabulary and WER scoring see."""
    kept = (
        " " if unicodedata.category(c)[0] in "PSZC" else c
        for c in unicodedata.normalize("NFC", text.lower())
    )
    return " ".join("".join(kept).split())


@dataclass(frozen=True)
class CharVocab:
    """Character tokens; tokens[i] has id i, tokens[:3] are the special tokens."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}, got {self.tokens[:3]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary has a repeated token")
        bad = [t for t in self.tokens[len(SPECIAL_TOKENS) :] if len(t) != 1 or t.isspace()]
        if bad:
            raise ValueError(f"vocabulary tokens must be single non-space characters: {bad[0]!r}")
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    @property
    def blank_id(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Ids of a normalized text: spaces -> "|", unknown characters -> "<unk>"."""
        unk = self._ids[UNK]
        delimiter = self._ids[WORD_DELIMITER]
        return [delimiter if c == " " else self._ids.get(c, unk) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids as transformers' Wav2Vec2CTCTokenizer writes it: "|" -> space, blanks
        dropped, the ends stripped (a delimiter repeated across a blank stays two spaces there
        too, so an exported model decodes the same strings)."""
        chars = []
        for i in ids:
            token = self.tokens[int(i)]
            if token == PAD:
                continue
            chars.append(" " if token == WORD_DELIMITER else token)
        return "".join(chars).strip()

    def save(self, folder: str | Path) -> None:
        """vocab.json ({token: id}) + tokenizer_config.json: Wav2Vec2CTCTokenizer.from_pretrained
        loads the folder, so an exported HubertForCTC folder can carry it."""
        folder = Path(folder)
        atomic_write_json(folder / VOCAB_FILE, {t: i for i, t in enumerate(self.tokens)})
        atomic_write_json(folder / "tokenizer_config.json", TOKENIZER_CONFIG)


def build_vocab(texts: Iterable[str], *, min_count: int = 1) -> CharVocab:
    """Characters of normalized training texts seen at least min_count times, sorted."""
    counts = Counter(c for text in texts for c in normalize_text(text) if c != " ")
    chars = sorted(c for c, n in counts.items() if n >= min_count)
    if not chars:  # every target would be <unk>: a model that can spell nothing
        raise ValueError(
            "no character to build a vocabulary from: the texts are empty or all punctuation "
            f"after normalization (or no character is seen {min_count} times)"
        )
    return CharVocab(SPECIAL_TOKENS + tuple(chars))


def load_vocab(path: str | Path) -> CharVocab:
    """A vocab.json ({token: id}, ids 0..n-1) or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such vocabulary file")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
        raise ValueError(f"{path}: expected {{token: id}} with ids 0..n-1")
    try:
        vocab = CharVocab(tuple(sorted(table, key=table.__getitem__)))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if len(vocab) == len(SPECIAL_TOKENS):
        raise ValueError(f"{path}: no character token, only {', '.join(SPECIAL_TOKENS)}")
    return vocab


def ctc_labels(texts: Sequence[str], vocab: CharVocab) -> tuple[np.ndarray, np.ndarray]:
    """Normalized texts as (batch, longest) int64 ids padded with -100 (the ignore index
    HubertForCTC's loss expects), and their lengths (batch,)."""
    encoded = [vocab.encode(normalize_text(t)) for t in texts]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    labels = np.full((len(encoded), int(lengths.max(initial=0))), -100, dtype=np.int64)
    for b, ids in enumerate(encoded):
        labels[b, : len(ids)] = ids
    return labels, lengths


def greedy_ctc_decode(log_probs: np.ndarray, num_frames: int | None = None) -> list[int]:
    """Best path of (frames, vocab) log-probabilities (or logits): argmax per frame, repeats
    collapsed, blanks (id 0) dropped. num_frames cuts a padded sequence."""
    best = np.asarray(log_probs)[:num_frames].argmax(axis=-1)
    if best.size == 0:
        return []
    keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != 0)
    return best[keep].tolist()


def greedy_ctc_texts(log_probs: np.ndarray, lengths: Sequence[int], vocab: CharVocab) -> list[str]:
    """Texts of a (batch, frames, vocab) array with each item's frame count."""
    return [vocab.decode(greedy_ctc_decode(log_probs[b], int(n))) for b, n in enumerate(lengths)]


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, deletions, insertions) of two sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i]
        for j, h in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]
