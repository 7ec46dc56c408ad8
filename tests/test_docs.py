"""The documentation stays in step with the code, and points nowhere outside the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli_reference():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_holds_the_current_command_reference() -> None:
    module = _cli_reference()
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert module.render(current) == current, "docs/cli.md is out of date: run python docs/cli_reference.py"
    for option in ("--text-column", "--checkpoint", "--gate", "--interference"):
        assert f"`{option}" in current


def test_every_command_is_in_the_reference() -> None:
    from auditor.cli import app

    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    names = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    assert len(names) >= 6
    for name in names:
        assert f"## `auditor {name}`" in current, name


def test_docs_and_readme_link_only_inside_the_repository() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)]+)\)", text):
            assert not re.match(r"[a-z]+://", target), f"{path.name} links outside the repository: {target}"
            local = (path.parent / target.split("#")[0]).resolve()
            assert local.is_relative_to(ROOT) and local.exists(), f"{path.name}: broken link {target}"
        assert "shared/design" not in text and "CONCEPTS.md" not in text, path.name
