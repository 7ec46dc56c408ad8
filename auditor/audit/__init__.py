"""The whole audit: options, the pipeline of stages, the typed result and its files.

:func:`run_audit` runs every analysis and the gate and returns an :class:`AuditResult`,
which is what ``results.json`` holds (:meth:`AuditResult.to_dict`; the schema is
documented in ``docs/results-schema.md``) and what the report is drawn from;
:func:`auditor.save.save_audit` writes both files.
"""

from __future__ import annotations

from .options import AuditOptions
from .pipeline import run_audit, select_candidates
from .result import SCHEMA_VERSION, AuditResult

__all__ = ["AuditOptions", "AuditResult", "run_audit", "select_candidates", "SCHEMA_VERSION"]
