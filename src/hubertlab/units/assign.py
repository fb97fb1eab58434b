"""Transcription: a unit id for every 20 ms frame of every utterance of a manifest.

Per shard i of N (names and resume from `hubertlab.shards`) in OUT_DIR:
  <shard>.units.jsonl     {"fileid", "units"} lines, appended in committed chunks
  <shard>.progress.json   committed utterances and bytes (a killed shard resumes after them)
  <shard>.done            done marker
  .<shard>.lock           held by the shard's writer: a second writer of the shard is refused
When every shard is done, they are merged in manifest order into
  units.jsonl  (fileid + units; what `read_units` and the training loop read),
  units.km     (fairseq: one line of space-separated ints per manifest row),
  dict.km.txt  ("i 1" for every cluster: an empty dict silently turns every label into UNK),
  units.json   (k, label rate, quantizer, feature settings, manifest).

Label rates are explicit: 100 Hz MFCC units are taken every second frame (MFCC frame 2t covers
the samples of CNN frame t), so every utterance gets exactly num_frames(num_samples) units.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hubertlab.constants import LABEL_RATE_HZ, num_frames
from hubertlab.data.manifest import Manifest, ManifestRow, read_manifest
from hubertlab.features.extractors import (
    FeatureExtractor,
    describe,
    extract_checked,
    require_finite,
)
from hubertlab.features.store import FeatureStore
from hubertlab.fileio import atomic_open, atomic_write_json, atomic_write_text, read_jsonl
from hubertlab.shards import (
    CommittedAppender,
    check_committed_prefix,
    prefetch,
    shard_lock,
    shard_name,
    shard_rows,
)
from hubertlab.unit_ids import parse_km_line, recorded_num_units, unit_ids
from hubertlab.units.kmeans import KMeansModel

log = logging.getLogger(__name__)

UNITS_NAME = "units.jsonl"
KM_NAME = "units.km"
DICT_NAME = "dict.km.txt"
META_NAME = "units.json"
SHARD_UNITS_SUFFIX = ".units.jsonl"


def label_stride(frame_rate_hz: int) -> int:
    """Feature frames per label: 2 for 100 Hz MFCC, 1 for 50 Hz layer features."""
    if frame_rate_hz % LABEL_RATE_HZ:
        raise ValueError(f"feature rate {frame_rate_hz} Hz is not a multiple of {LABEL_RATE_HZ} Hz")
    return frame_rate_hz // LABEL_RATE_HZ


def _check_match(kmeans: KMeansModel, dim: int, settings: dict, source: str) -> None:
    """The k-means must have been fitted on features of this source: same dim, kind, layer
    and fingerprint (weights of the model, or MFCC settings). A k-means from before
    fingerprints were recorded is taken with a warning."""
    name = f"k-means {kmeans.source}" if kmeans.source else "k-means"
    if kmeans.dim != dim:
        raise ValueError(f"{name}: centroids have dim {kmeans.dim}, the features of {source} {dim}")
    fitted = kmeans.meta.get("feature") or {}
    for key in ("kind", "layer"):
        if key in fitted and key in settings and fitted[key] != settings[key]:
            raise ValueError(
                f"{name} was fitted on {key}={fitted[key]!r} features, {source} gives "
                f"{key}={settings[key]!r}"
            )
    # Both outputs of a SpidR layer come from the same weights, and CMVN changes no setting
    # of the extractor: the fingerprint cannot tell.
    differs = any(bool(fitted.get(k)) != bool(settings.get(k)) for k in ("intermediate", "cmvn"))
    if fitted and differs:
        raise ValueError(
            f"{name} was fitted on the features of {describe(fitted, with_fingerprint=False)}, "
            f"{source} gives {describe(settings, with_fingerprint=False)}"
        )
    theirs, ours = fitted.get("fingerprint"), settings.get("fingerprint")
    if theirs is None or ours is None:
        log.warning(
            "%s: no feature fingerprint recorded with %s: cannot check that it was fitted on "
            "the features of %s",
            name, "the k-means" if theirs is None else source, source,
        )  # fmt: skip
    elif theirs != ours:
        raise ValueError(
            f"{name} was fitted on the features of {describe(fitted)}, but {source} gives "
            f"fingerprint {ours[:12]}; use the features the k-means was fitted on, or refit it"
        )


class _Source:
    """Features of one row, from a store (precomputed) or an extractor (computed now)."""

    def __init__(self, source: FeatureStore | FeatureExtractor, manifest: Manifest) -> None:
        self.store = source if isinstance(source, FeatureStore) else None
        self.extractor = None if self.store is not None else source
        self.manifest = manifest
        if self.store is not None:
            self.dim, self.rate = self.store.dim, self.store.frame_rate_hz
            self.settings = self.store.meta.get("extractor", {})
            self.name = (
                f"store {self.store.root} ({describe(self.settings, with_fingerprint=False)})"
            )
        else:
            self.dim, self.rate = source.dim, source.frame_rate_hz
            self.settings = source.settings()
            self.name = f"extractor {describe(self.settings, with_fingerprint=False)}"

    def load(self, row: ManifestRow) -> np.ndarray:
        if self.store is not None:
            if row.fileid not in self.store:
                raise ValueError(f"{self.store.root}: no features for fileid {row.fileid!r}")
            # a plain read, not a memmap view: the process keeps no pages of the store mapped
            feats = self.store.read_frames(row.fileid).astype(np.float32)
            require_finite(feats, f"{self.store.root}: {row.fileid}")
            return feats
        return row.read_audio(self.manifest.root)

    def features(self, row: ManifestRow, loaded: np.ndarray) -> np.ndarray:
        if self.extractor is None:
            return loaded
        return extract_checked(self.extractor, row, loaded, self.manifest.source)


def units_for_row(
    row: ManifestRow, feats: np.ndarray, kmeans: KMeansModel, stride: int
) -> np.ndarray:
    """Units at 50 Hz for one utterance; ValueError naming it if the count is not
    num_frames(num_samples) (a stride-2 MFCC count ceil(M/2) equals it for every length)."""
    units = kmeans.predict(feats)[::stride] if len(feats) else np.zeros(0, np.int64)
    expected = num_frames(row.num_samples)
    if len(units) != expected:
        raise ValueError(
            f"{row.fileid}: {len(units)} units for {row.num_samples} samples, expected "
            f"num_frames = {expected}; features and manifest disagree (stale store?)"
        )
    return units.astype(np.int32)


def transcribe(
    manifest: Manifest | str | Path,
    kmeans: KMeansModel | str | Path,
    feature_source: FeatureStore | FeatureExtractor | str | Path,
    out_dir: str | Path,
    shard: int = 0,
    num_shards: int = 1,
    *,
    chunk_utterances: int = 500,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Units for shard `shard` of `num_shards` of `manifest` into `out_dir`; merges all shards
    once every one is done. `feature_source`: a FeatureStore (or its folder) or an extractor
    (MfccExtractor, LayerExtractor). Resumable; `on_chunk(utterances_done)` after each commit.
    Returns the merged units.jsonl path (or the shard's file while others are pending)."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if not len(manifest):
        raise ValueError(f"{manifest.source or 'manifest'}: no rows (empty manifest)")
    if not isinstance(kmeans, KMeansModel):
        kmeans = KMeansModel.load(kmeans)
    if isinstance(feature_source, str | Path):
        feature_source = FeatureStore.open(feature_source)
    rows = shard_rows(manifest, shard, num_shards)
    source = _Source(feature_source, manifest)
    _check_match(kmeans, source.dim, source.settings, source.name)
    stride = label_stride(source.rate)
    out = Path(out_dir)
    with shard_lock(out, shard, num_shards):
        appender = CommittedAppender(
            out / shard_name(shard, num_shards), {SHARD_UNITS_SUFFIX: "bytes"}, on_commit=on_chunk
        )
        if not appender.done:
            _transcribe_shard(appender, rows, source, kmeans, stride, chunk_utterances)
    meta = {
        "k": kmeans.k, "label_rate_hz": LABEL_RATE_HZ, "feature": source.settings,
        "kmeans": kmeans.meta, "manifest": manifest.source, "num_shards": num_shards,
    }  # fmt: skip
    if all((out / f"{shard_name(i, num_shards)}.done").is_file() for i in range(num_shards)):
        return merge_units(manifest, out, num_shards, meta)
    return appender.path(SHARD_UNITS_SUFFIX)


def _committed_fileids(path: Path) -> list[str]:
    fileids = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                fileids.append(json.loads(line)["fileid"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{line_no}: not a units line; delete the shard") from None
    return fileids


def _transcribe_shard(
    appender: CommittedAppender,
    rows: list[ManifestRow],
    source: _Source,
    kmeans: KMeansModel,
    stride: int,
    chunk_utterances: int,
) -> None:
    committed = _committed_fileids(appender.path(SHARD_UNITS_SUFFIX))
    check_committed_prefix(appender, committed, [r.fileid for r in rows], source.manifest.source)
    todo = rows[appender.utterances :]
    log.info(
        "%s: %d utterances to transcribe (%d done before)",
        appender.base.name, len(todo), appender.utterances,
    )  # fmt: skip
    for row, loaded in zip(todo, prefetch(source.load, todo), strict=True):
        units = units_for_row(row, source.features(row, loaded), kmeans, stride)
        line = json.dumps({"fileid": row.fileid, "units": units.tolist()}) + "\n"
        appender.append({SHARD_UNITS_SUFFIX: line.encode()})
        if appender.pending_utterances >= chunk_utterances:
            appender.commit()
    appender.mark_done()


def merge_units(manifest: Manifest, out_dir: Path, num_shards: int, meta: dict) -> Path:
    """Join the shard files on fileid in manifest order into units.jsonl, units.km,
    dict.km.txt and units.json (all written atomically)."""
    units: dict[str, np.ndarray] = {}
    for i in range(num_shards):
        units.update(read_units(out_dir / f"{shard_name(i, num_shards)}.units.jsonl"))
    ordered = join_units(manifest, units)
    with atomic_open(out_dir / UNITS_NAME, "w", encoding="utf-8") as fj:
        for row, u in zip(manifest, ordered, strict=True):
            fj.write(json.dumps({"fileid": row.fileid, "units": u.tolist()}) + "\n")
    with atomic_open(out_dir / KM_NAME, "w", encoding="utf-8") as fk:
        for u in ordered:
            fk.write(" ".join(map(str, u.tolist())) + "\n")
    atomic_write_text(out_dir / DICT_NAME, "".join(f"{i} 1\n" for i in range(meta["k"])))
    atomic_write_json(out_dir / META_NAME, {**meta, "num_utterances": len(ordered)})
    log.info("%s: units of %d utterances merged", out_dir, len(ordered))
    return out_dir / UNITS_NAME


def read_units(path: str | Path, manifest: Manifest | None = None) -> dict[str, np.ndarray]:
    """fileid -> units (int32) from a units.jsonl file (or a folder holding one), or from a
    fairseq .km file given the manifest whose rows its lines follow. Every id must be an
    integer 0 <= id < k (k from a units.json beside the file, when there is one): anything
    else raises ValueError naming the file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / UNITS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"units file not found: {path}")
    num_units = _recorded_k(path.parent / META_NAME)
    if path.suffix == ".km":
        return _read_km(path, manifest, num_units)
    units: dict[str, np.ndarray] = {}
    for where, d in read_jsonl(path):
        if "fileid" not in d or "units" not in d:
            raise ValueError(f"{where}: expected {{'fileid', 'units'}}")
        fileid = d["fileid"]
        if fileid in units:
            raise ValueError(f"{where}: fileid {fileid!r} appears twice")
        units[fileid] = unit_ids(d["units"], f"{where}: {fileid}", num_units)
    return units


def _recorded_k(meta_path: Path) -> int | None:
    """The k of a transcribe folder's units.json, None without one (a file made elsewhere)."""
    if not meta_path.is_file():
        return None
    try:
        return recorded_num_units(json.loads(meta_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{meta_path}: not valid JSON") from None


def _read_km(path: Path, manifest: Manifest | None, num_units: int | None) -> dict[str, np.ndarray]:
    if manifest is None:
        raise ValueError(f"{path}: a .km file has no fileids; pass the manifest it follows")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(manifest):
        raise ValueError(
            f"{path}: {len(lines)} lines, manifest {manifest.source} has {len(manifest)}"
        )
    return {
        row.fileid: parse_km_line(line, f"{path}:{line_no}", num_units)
        for line_no, (row, line) in enumerate(zip(manifest, lines, strict=True), start=1)
    }


def join_units(
    rows: Sequence[ManifestRow], units: dict[str, np.ndarray], *, check_lengths: bool = True
) -> list[np.ndarray]:
    """Units in the order of `rows`, joined on fileid. A missing row or a wrong count raises
    ValueError naming the fileid (never a silent shift of labels between files)."""
    missing = [r.fileid for r in rows if r.fileid not in units]
    if missing:
        raise ValueError(
            f"no units for fileid {missing[0]!r} ({len(missing)} of {len(rows)} rows missing); "
            "transcribe this manifest with the same fileids"
        )
    out = []
    for row in rows:
        u = units[row.fileid]
        if check_lengths and len(u) != num_frames(row.num_samples):
            raise ValueError(
                f"{row.fileid}: {len(u)} units for {row.num_samples} samples, expected "
                f"{num_frames(row.num_samples)}"
            )
        out.append(u)
    return out
