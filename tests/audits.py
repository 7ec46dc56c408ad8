"""Helpers for tests that run one audit several ways (serial, distributed, resumed) and compare."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import auditor

ROOT = Path(__file__).resolve().parent.parent


def assert_same_numbers(a: auditor.AuditResult, b: auditor.AuditResult) -> None:
    """Every number of two audits equal, bit for bit (NaN where NaN): not timings, devices or workers."""
    for name in ("loss", "accuracy", "counts", "gradient_norm", "alpha_max"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.cct.ego_classes == b.cct.ego_classes
    for name in ("alphas", "step_scale", "loss", "accuracy", "flow", "flow_top_classes", "flow_top_share", "counts"):
        x, y = getattr(a.cct, name), getattr(b.cct, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=f"cct.{name}")
    for name in ("conflict", "first_order", "finite", "alpha_s", "pair_score"):
        np.testing.assert_array_equal(getattr(a.interference, name), getattr(b.interference, name), err_msg=name)
    np.testing.assert_array_equal(a.flatness.curvature, b.flatness.curvature)
    np.testing.assert_array_equal(a.flatness.sharpness, b.flatness.sharpness)
    np.testing.assert_array_equal(a.errors.confusion, b.errors.confusion)
    assert [(m.a, m.b) for m in a.models] == [(m.a, m.b) for m in b.models]
    for ma, mb in zip(a.models, b.models):
        for name in ma._ARRAYS:
            np.testing.assert_array_equal(getattr(ma, name), getattr(mb, name), err_msg=f"model {ma.a}/{ma.b} {name}")
    assert a.candidates == b.candidates


def audit_command(model: Path, data: Path, out: Path, *options: str) -> list[str]:
    """``auditor audit`` as a subprocess command line (this interpreter, this checkout)."""
    return [sys.executable, "-m", "auditor.cli", "audit", str(model), "--data", str(data), "--out", str(out),
            "--no-report", "--quiet", *options]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that imports this checkout's auditor (and tests)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH", "")])])
    env.update(extra)
    return env


def kill_after_cells(command: Sequence[str], cells: Path, n: int, *, timeout: float = 120.0,
                     env: dict[str, str] | None = None) -> list[str]:
    """Start ``command``, SIGKILL it as soon as ``n`` CCT cells are in ``cells``; return the names written.

    Fails (AssertionError) if the process ends on its own or ``timeout`` passes first.
    """
    proc = subprocess.Popen(command, env=env or subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            written = sorted(p.name for p in cells.glob("cct-*.npz")) if cells.is_dir() else []
            if len(written) >= n:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return written
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"the audit ended (exit {proc.returncode}) before {n} cells were written: {err}")
            time.sleep(0.01)
        raise AssertionError(f"no {n} cells written within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def load_results(out: Path) -> auditor.AuditResult:
    return auditor.AuditResult.load(out / "results.json")
