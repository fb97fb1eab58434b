"""`hubertlab manifest`: scan, split, write the manifest(s) and the report of rejected files."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hubertlab.data.manifest import ManifestRow, manifest_format, write_manifest
from hubertlab.data.scan import ScanResult, scan_folder, scan_tar, split_rows
from hubertlab.fileio import atomic_open

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestOutputs:
    manifest: Path
    report: Path
    train: Path | None
    valid: Path | None
    num_rows: int
    num_rejected: int


def _relative_to(rows: list[ManifestRow], src_root: Path, out_dir: Path) -> list[ManifestRow]:
    """Rewrite paths (or archive names) from relative-to-SRC to relative-to-the-manifest."""
    prefix = os.path.relpath(src_root, out_dir)

    def rel(p: str) -> str:
        return p if prefix == "." else f"{prefix}/{p}".replace(os.sep, "/")

    out = []
    for r in rows:
        if r.archive is None:
            out.append(dataclasses.replace(r, path=rel(r.path)))
        else:
            out.append(dataclasses.replace(r, archive=rel(r.archive)))
    return out


def split_paths(out: Path) -> tuple[Path, Path]:
    """`x.csv` -> `x.train.csv`, `x.valid.csv`."""
    return out.with_suffix(f".train{out.suffix}"), out.with_suffix(f".valid{out.suffix}")


def build_manifest(
    src: str | Path,
    out: str | Path,
    *,
    valid_fraction: float | None = None,
    seed: int = 0,
    speaker_level: int | None = None,
    workers: int = 4,
) -> ManifestOutputs:
    """Scan `src` (a folder, or an uncompressed .tar) and write the manifest `out` atomically,
    plus `<out>.rejected.tsv` listing files left out with their reasons, plus a train/valid
    split when `valid_fraction` is given."""
    src, out = Path(src), Path(out)
    fmt = manifest_format(out)
    if valid_fraction is not None and not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"--valid-fraction must be in (0, 1), got {valid_fraction}")
    if src.is_dir():
        result: ScanResult = scan_folder(src, workers=workers)
        src_root = src
    elif src.is_file():
        result = scan_tar(src)
        src_root = src.parent
    else:
        raise FileNotFoundError(f"no such folder or archive: {src}")
    if fmt == "tsv":
        rows, root = result.rows, src_root.resolve()
    else:
        rows, root = _relative_to(result.rows, src_root, out.parent.resolve()), ""
    train = valid = None
    if valid_fraction is not None:
        train_rows, valid_rows = split_rows(
            rows, valid_fraction=valid_fraction, seed=seed, speaker_level=speaker_level
        )
        train, valid = split_paths(out)
        write_manifest(train_rows, train, root=root)
        write_manifest(valid_rows, valid, root=root)
    write_manifest(rows, out, root=root)
    report = out.with_suffix(out.suffix + ".rejected.tsv")
    with atomic_open(report, "w", encoding="utf-8") as f:
        f.write("path\treason\n")
        for r in result.rejected:
            f.write(f"{r.path}\t{r.reason}\n")
    log.info("%s: %d files, %d rejected (see %s)", out, len(rows), len(result.rejected), report)
    return ManifestOutputs(out, report, train, valid, len(rows), len(result.rejected))
