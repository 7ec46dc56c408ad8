"""Results to files: atomic writes (whole or not at all) and strict JSON for numpy arrays."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_text", "atomic_write_bytes", "write_json", "read_results_json", "to_jsonable", "json_array",
           "array_from_json"]


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results and reports are meant to be shared
    try:
        with (os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:  # KeyboardInterrupt included: never leave half a file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    p = Path(path)
    with _atomic(p, "w") as fh:
        fh.write(text)
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    p = Path(path)
    with _atomic(p, "wb") as fh:
        fh.write(data)
    return p


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Atomically write strict JSON (no NaN)."""
    return atomic_write_text(path, json.dumps(to_jsonable(data), indent=1, allow_nan=False) + "\n")


def read_results_json(path: str | os.PathLike[str], command: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, a results file ``auditor <command>`` wrote (``what``: "an audit's").

    Raises
    ------
    ResultsError
        A missing, unreadable or non-JSON file, or JSON that is not an object.
    """
    import json

    from .errors import ResultsError

    p = Path(path)
    if not p.is_file():
        raise ResultsError(f"results file '{p}' does not exist; run `auditor {command}` first")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"'{p}' is not a readable JSON results file ({err}); run `auditor {command}` "
                           "again") from err
    if not isinstance(data, dict):
        raise ResultsError(f"'{p}' holds a JSON {type(data).__name__}, not {what} results; run `auditor "
                           f"{command}` again")
    return data


def json_array(a: Any) -> Any:
    """An array as nested lists with NaN as None (strict JSON has no NaN)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        obj = a.astype(object)
        obj[np.isnan(a)] = None
        return obj.tolist()
    return a.tolist()


def array_from_json(v: Any, dtype: Any = np.float64) -> np.ndarray:
    """The inverse of :func:`json_array`: None back to NaN for float arrays."""
    a = np.asarray(v, dtype=object)
    if np.dtype(dtype).kind == "f":
        a = np.where(a == None, np.nan, a)  # noqa: E711 (element-wise comparison)
    return a.astype(dtype)
