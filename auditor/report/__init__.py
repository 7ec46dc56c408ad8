"""The HTML interference report (drawn only from results; see :mod:`auditor.report.html`)."""

from __future__ import annotations

from .html import TemplateNotFoundError, render_dance_report, render_report, template_dir

__all__ = ["render_report", "render_dance_report", "template_dir", "TemplateNotFoundError"]
