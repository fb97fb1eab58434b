"""Reading pickled checkpoints safely: torch.load with weights_only=True and a small
allow-list (argparse.Namespace for fairseq `args`, inert stand-ins for omegaconf/fairseq config
classes); anything else (os.system, eval, ...) is refused with an error naming the class. The
HuBERT and SpidR/DinoSR readers (models/checkpoint.py, models/spidr_io.py) read files through
this module.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

# Config objects fairseq pickles; replaced by inert _ConfigStub instances when loading.
_STUB_MODULES = ("omegaconf.", "fairseq.", "typing.", "enum.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read (unknown layout, unsafe pickle, mismatched keys)."""


class _ConfigStub:
    """Stands in for omegaconf/fairseq config classes: records its state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_python(self) -> Any:
        """Best-effort plain value of an omegaconf node/container."""
        state = self.state
        if isinstance(state, dict) and "_content" in state:
            return plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return plain(state["_val"])
        return plain(self.args[0]) if self.args else None


def plain(value: Any) -> Any:
    if isinstance(value, _ConfigStub):
        return value.to_python()
    if isinstance(value, argparse.Namespace):
        return {k: plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def safe_load(path: str | Path) -> Any:
    """torch.load with weights_only=True, plus argparse.Namespace and inert stand-ins for
    omegaconf/fairseq config classes. Any other global is refused with CheckpointError, and so
    is a truncated or corrupt file; every message names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    allowed: list[Any] = [argparse.Namespace]
    for _ in range(200):  # each round allows one more config class name
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            name = _refused_global(e)
            if name is None:
                raise _unreadable(path, _unpickler_detail(e)) from None
            if not name.startswith(_STUB_MODULES):
                raise CheckpointError(
                    f"{path}: refusing to unpickle {name}: not on the allow-list "
                    "of classes a checkpoint may contain (loading it could run code)"
                ) from None
            stub = type(name.rsplit(".", 1)[-1], (_ConfigStub,), {})
            allowed.append((stub, name))
        except Exception as e:  # a damaged file makes torch raise anything, OSError to KeyError
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise _unreadable(path, detail) from e
    raise CheckpointError(f"{path}: too many config classes in the pickle")


def _refused_global(error: pickle.UnpicklingError) -> str | None:
    """The class torch's weights-only unpickler refused, if that is why it stopped."""
    m = re.search(r"GLOBAL ([\w.]+)", str(error))
    return m[1] if m else None


def _unpickler_detail(error: pickle.UnpicklingError) -> str:
    """torch's reason without its advice to retry with weights_only=False, which would let
    the file run code."""
    m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", str(error))
    return m[1] if m else str(error).splitlines()[0]


def _unreadable(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read as a PyTorch checkpoint ({detail}); the file is truncated or "
        "corrupt (copy it again), or holds objects a weights-only checkpoint cannot contain"
    )
