"""Resume an audit: every finished cell written atomically, under a manifest that names the audit.

A checkpoint directory holds::

    manifest.json       format, the audit's fingerprint (model and data hashes, options,
                        versions) and the provider and strategy the first run fixed
    cells/<key>.npz     one finished cell: its per-class sums at each step, the digest of its
                        inputs (ego direction or grid axes, steps), and where it ran

A rerun with the same directory reads finished cells back instead of computing them, and
refuses, in one line, a directory made by another audit: another model, data, options or
version (the manifest), or other ego directions or steps (a cell's digest). Cells are written
by the driver only, so the directory lives on the driver's machine whatever the executor.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import CheckpointError
from auditor.runtime import StepStats
from auditor.serialization import atomic_write_bytes, to_jsonable, write_json

from .worker import Evaluated

__all__ = ["Checkpoint", "digest", "FORMAT", "MANIFEST"]

FORMAT = 1
MANIFEST = "manifest.json"
_CELLS = "cells"
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,200}$")


def digest(*parts: np.ndarray | str | float) -> str:
    """SHA-256 of arrays (dtype, shape and bytes), strings and floats: what a cell was computed from."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data.cast("B"))
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first field (dotted path, in sorted order) where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if found is not None:
                return found
        return None
    return None if old == new else (where, old, new)


class Checkpoint:
    """A checkpoint directory (see the module docstring).

    Parameters
    ----------
    directory : path-like
        Created if missing; an existing directory must be empty or a checkpoint.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._manifest: dict[str, Any] = {}

    def open(self, fingerprint: Mapping[str, Any]) -> Mapping[str, Any]:
        """Start a new checkpoint or resume this one; return the settings its first run fixed.

        Raises
        ------
        CheckpointError
            The directory is not a checkpoint, or it belongs to another audit.
        """
        current = to_jsonable(dict(fingerprint))
        path = self.directory / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
                old = manifest["fingerprint"]
                fmt = manifest["format"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"--checkpoint {self.directory}: {MANIFEST} cannot be read ({err}); give a "
                                      "new directory, or delete this one to start over") from err
            if fmt != FORMAT:
                raise CheckpointError(f"--checkpoint {self.directory} has format {fmt}, this auditor writes "
                                      f"{FORMAT}; give a new directory")
            found = _first_difference(old, current)
            if found is not None:
                field, was, now = found
                raise CheckpointError(
                    f"--checkpoint {self.directory} belongs to another audit: its {field} is {_short(was)} but this "
                    f"audit's is {_short(now)}; give a new directory, or delete this one to start over")
            self._manifest = manifest
            return dict(manifest.get("fixed") or {})
        if self.directory.exists() and (not self.directory.is_dir() or any(self.directory.iterdir())):
            raise CheckpointError(f"--checkpoint {self.directory} exists and is not a checkpoint (no {MANIFEST}); "
                                  "give a new or empty directory")
        self._manifest = {"format": FORMAT, "fingerprint": current, "fixed": {}}
        write_json(path, self._manifest)
        return {}

    def fix(self, settings: Mapping[str, Any]) -> None:
        """Record the settings the first run settled on (provider, strategy); a resumed run must match them."""
        fixed = self._manifest.get("fixed") or {}
        settings = to_jsonable(dict(settings))
        if fixed:
            found = _first_difference(fixed, settings)
            if found is not None:
                field, was, now = found
                raise CheckpointError(f"--checkpoint {self.directory} was computed with {field} {_short(was)}, this "
                                      f"run has {_short(now)}; run where {field} is {_short(was)} or give a new "
                                      "directory")
            return
        self._manifest["fixed"] = settings
        write_json(self.directory / MANIFEST, self._manifest)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"bad checkpoint key {key!r}")
        return self.directory / _CELLS / f"{key}.npz"

    def has(self, key: str) -> bool:
        """Whether cell ``key`` was written."""
        return self._path(key).is_file()

    def stored(self) -> list[str]:
        """Keys of the cells written so far."""
        folder = self.directory / _CELLS
        return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []

    def load(self, key: str, expected: str) -> Evaluated | None:
        """The stored cell ``key``, or None; refuses one computed from other inputs than ``expected`` (a digest)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                loss = np.asarray(f["loss_sum"], dtype=np.float64)
                k = int(f["k"])
                index, value, offsets = f["confusion_index"], f["confusion_value"], f["confusion_offsets"]
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"--checkpoint {self.directory}: cell {key} cannot be read ({err}); delete "
                                  f"{path} to compute it again") from err
        if meta.get("digest") != expected:
            raise CheckpointError(
                f"--checkpoint {self.directory}: cell {key} was computed from other inputs (ego direction, grid axes "
                "or steps) than this run's, so the gradients came out differently (another device or runtime?); "
                "give a new directory, or delete this one to start over")
        stats = []
        for n in range(len(loss)):
            flat = np.zeros(k * k, dtype=np.int64)
            span = slice(int(offsets[n]), int(offsets[n + 1]))
            flat[index[span]] = value[span]
            confusion = flat.reshape(k, k)
            stats.append(StepStats(loss_sum=loss[n].copy(), count=confusion.sum(axis=1), confusion=confusion))
        return Evaluated(tuple(stats), str(meta["device"]), str(meta["worker"]), float(meta["seconds"]),
                         resumed=True)

    def store(self, key: str, expected: str, result: Evaluated) -> None:
        """Write one finished cell atomically (whole or not at all); ``expected`` is the digest of its inputs."""
        k = int(result.stats[0].confusion.shape[0]) if result.stats else 0
        flat = [s.confusion.reshape(-1) for s in result.stats]
        index = [np.flatnonzero(f) for f in flat]
        value = [f[i] for f, i in zip(flat, index)]
        offsets = np.concatenate([[0], np.cumsum([len(i) for i in index])]).astype(np.int64)
        meta = {"key": key, "digest": expected, "device": result.device, "worker": result.worker,
                "seconds": result.seconds}
        buffer = io.BytesIO()
        np.savez(buffer, loss_sum=np.stack([s.loss_sum for s in result.stats]) if result.stats else np.zeros((0, k)),
                 k=np.int64(k), confusion_index=np.concatenate(index) if index else np.zeros(0, np.int64),
                 confusion_value=np.concatenate(value) if value else np.zeros(0, np.int64),
                 confusion_offsets=offsets, meta=np.array(json.dumps(meta)))
        atomic_write_bytes(self._path(key), buffer.getvalue())
