"""Write result files: an audit's or a comparison's ``results.json`` and ``report.html``, a
dance's ``dance.json`` and ``dance.html``. Each file is written atomically (whole or not at all), so an
interrupted run leaves earlier files intact."""

from __future__ import annotations

import os
from pathlib import Path

from .audit import AuditResult
from .comparison import CompareResult
from .dancing import DanceAnalysis
from .serialization import write_json

__all__ = ["save_audit", "save_compare", "save_dance", "RESULTS_FILE", "REPORT_FILE", "DANCE_FILE", "DANCE_REPORT_FILE"]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
DANCE_FILE = "dance.json"
DANCE_REPORT_FILE = "dance.html"


def save_audit(result: AuditResult, out: str | os.PathLike[str], *, report: bool = True) -> list[Path]:
    """Write ``results.json`` (and ``report.html``) into the directory ``out`` (created if missing).

    Parameters
    ----------
    result : AuditResult
    out : path-like
    report : bool, default=True
        Also render the HTML report.

    Returns
    -------
    list of Path
        The files written, in order.
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = [write_json(directory / RESULTS_FILE, result.to_dict())]
    if report:
        from .report import render_report

        written.append(render_report(result, directory / REPORT_FILE))
    return written


def save_compare(result: CompareResult, out: str | os.PathLike[str], *, report: bool = True) -> list[Path]:
    """Write a comparison's ``results.json`` (and ``report.html``) into the directory ``out`` (created if missing).

    Parameters
    ----------
    result : CompareResult
    out : path-like
    report : bool, default=True
        Also render the HTML report.

    Returns
    -------
    list of Path
        The files written, in order.
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = [write_json(directory / RESULTS_FILE, result.to_dict())]
    if report:
        from .report import render_compare_report

        written.append(render_compare_report(result, directory / REPORT_FILE))
    return written


def save_dance(analysis: DanceAnalysis, out: str | os.PathLike[str], *, report: bool = True) -> list[Path]:
    """Write ``dance.json`` (and the standalone ``dance.html``) into the directory ``out``."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = [write_json(directory / DANCE_FILE, analysis.to_dict())]
    if report:
        from .report import render_dance_report

        written.append(render_dance_report(analysis, directory / DANCE_REPORT_FILE))
    return written
