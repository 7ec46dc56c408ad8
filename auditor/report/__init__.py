"""The HTML reports, drawn only from result objects (so they can be rebuilt from results.json).

:mod:`auditor.report.sections` and :mod:`auditor.report.dance` pick what each section
shows; :mod:`auditor.report.figures` draws; :mod:`auditor.report.render` fills the
templates and writes the file. :mod:`auditor.report.compare` (with
:mod:`auditor.report.compare_figures`) does the same for a comparison.
"""

from __future__ import annotations

from .compare import render_compare_report
from .render import TemplateNotFoundError, render_dance_report, render_report, template_dir

__all__ = ["render_report", "render_dance_report", "render_compare_report", "template_dir", "TemplateNotFoundError"]
