"""Render the report templates into one self-contained HTML file (inline CSS, PNG data URIs).

Templates live in ``reports/templates`` (installed as ``auditor/_templates``), one per
section. Writing is atomic: a failure while drawing leaves an existing file untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auditor.audit import AuditResult
from auditor.dancing import DanceAnalysis
from auditor.errors import AuditorError
from auditor.report import figures, sections
from auditor.report.dance import dance_context
from auditor.report.format import fmt_num, fmt_pct, fmt_points, fmt_seconds
from auditor.serialization import atomic_write_text

__all__ = ["render_report", "render_dance_report", "render_template", "build_context", "template_dir",
           "TemplateNotFoundError", "SECTIONS"]

#: Section ids, in page order.
SECTIONS = ("summary", "per-class", "errors", "examples", "interference", "cct", "interference-models",
            "label-dancing", "method")


class TemplateNotFoundError(AuditorError, FileNotFoundError):
    """The report templates are missing from both the source checkout and the installed package."""


def template_dir() -> Path:
    """The report templates: ``reports/templates`` in a source checkout, else ``auditor/_templates``.

    Raises
    ------
    TemplateNotFoundError
        When neither exists (a broken install).
    """
    package = Path(__file__).resolve().parent.parent
    candidates = [package.parent / "reports" / "templates", package / "_templates"]
    for c in candidates:
        if (c / "base.html.j2").is_file():
            return c
    raise TemplateNotFoundError(
        "report templates not found; looked in " + " and ".join(f"'{c}'" for c in candidates)
        + ". In a source checkout they live in reports/templates; a wheel installs them as auditor/_templates "
        "(reinstall auditor: pip install --force-reinstall auditor)")


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(num=fmt_num, pct=fmt_pct, points=fmt_points, seconds=fmt_seconds, short=figures.short)
    return env


def render_template(name: str, context: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render one page template with ``context`` and write it to ``path`` atomically."""
    return atomic_write_text(path, _environment().get_template(name).render(**context))


def build_context(result: AuditResult, title: str | None = None) -> dict[str, Any]:
    """Everything the report templates show (figures included), from one result."""
    names = [str(n) for n in result.class_names]
    model_file = os.path.basename(str(result.model.get("path", ""))) or "model"
    return {
        "title": title or f"Class interference audit: {model_file}",
        "sections": SECTIONS, "names": names, "k": result.n_classes, "large": result.n_classes > sections.LARGE_K,
        "summary": sections.summary(result, names), "per_class": sections.per_class(result, names),
        "errors": sections.errors(result, names), "examples": sections.examples(result, names),
        "interference": sections.interference(result, names),
        "cct": sections.cct(result, names), "models": sections.models(result, names),
        "dance": None if result.dance is None else dance_context(result.dance, names),
        "method": sections.method(result), "created": result.created,
    }


def render_report(result: AuditResult, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the interference report of ``result`` to ``path`` as one self-contained HTML file.

    Parameters
    ----------
    result : AuditResult
        What :func:`auditor.run_audit` returned, or ``AuditResult.from_dict`` of a results.json.
    path : path-like
        The HTML file; written atomically (whole or not at all: a failure while drawing
        leaves an existing file untouched).
    title : str, optional
        Page title (default: "Class interference audit: MODEL FILE").

    Returns
    -------
    Path
    """
    return render_template("report.html.j2", build_context(result, title), path)


def render_dance_report(dance: DanceAnalysis, path: str | os.PathLike[str], *,
                        class_names: list[str] | None = None, title: str | None = None) -> Path:
    """Write a standalone label-dancing report to ``path``, atomically.

    Parameters
    ----------
    dance : DanceAnalysis
    path : path-like
    class_names : list of str, optional
        Used when ``dance`` carries none.
    title : str, optional

    Returns
    -------
    Path
    """
    ctx = {"title": title or "Label dancing during training", "sections": ("label-dancing",),
           "dance": dance_context(dance, class_names), "created": "", "standalone": True}
    return render_template("dance_report.html.j2", ctx, path)
