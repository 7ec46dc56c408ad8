"""The report in a real browser: Debian's headless chromium loads it without errors.

Screenshots land in tests/artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from auditor import AuditResult
from auditor.report import render_dance_report, render_report
from auditor.report.render import SECTIONS
from tests.report_fixtures import synthetic

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Debian chromium not installed; .ci/run installs it")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line
            or "Failed to load resource" in line or "net::ERR" in line]


def check_page(page: Path, tmp_path: Path, sections: tuple[str, ...], shot: str) -> None:
    from PIL import Image

    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    html = dom.stdout
    for sid in sections:
        assert f'<section id="{sid}"' in html, sid
    uris = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', html)
    assert uris, "no images in the rendered DOM"
    for uri in uris:
        head, _, payload = uri.partition(",")
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
            assert im.size[0] > 0 and im.size[1] > 0

    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / shot
    png.unlink(missing_ok=True)
    run = chromium(page, tmp_path, f"--screenshot={png}", "--window-size=1280,4000", "--hide-scrollbars")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not console_errors(run.stderr), console_errors(run.stderr)
    with Image.open(png) as im:
        assert im.size == (1280, 4000)
        # not a blank page: plenty of non-white pixels
        grey = np.asarray(im.convert("L").resize((64, 200)))
        assert int((grey < 240).sum()) > 300


def test_report_in_chromium(tmp_path: Path) -> None:
    result = AuditResult.from_dict(synthetic.small())
    result = result.with_dance(synthetic.dance(k=5))
    page = render_report(result, tmp_path / "report.html")
    check_page(page, tmp_path, SECTIONS, "report_small.png")


def test_large_k_report_in_chromium(tmp_path: Path) -> None:
    result = AuditResult.from_dict(synthetic.large_k(40))
    result = result.with_dance(synthetic.dance(k=40, per_class=5))
    page = render_report(result, tmp_path / "large.html")
    check_page(page, tmp_path, SECTIONS, "report_large_k.png")


def test_dance_report_in_chromium(tmp_path: Path) -> None:
    page = render_dance_report(synthetic.dance(k=5), tmp_path / "dance.html")
    check_page(page, tmp_path, ("label-dancing",), "report_dance.png")


def test_compare_report_in_chromium(tmp_path: Path) -> None:
    from auditor.comparison import compare
    from auditor.demo import demo_paths
    from auditor.report.compare import COMPARE_SECTIONS, render_compare_report

    paths = demo_paths()
    result = compare(paths.model, paths.candidate, paths.data)
    page = render_compare_report(result, tmp_path / "compare.html")
    check_page(page, tmp_path, COMPARE_SECTIONS, "report_compare.png")
    # the regressed class (digit 3, starved of training images in the candidate) reaches the DOM with its drop
    dom = chromium(page, tmp_path, "--dump-dom").stdout
    regressed = result.regressed_classes()
    assert len(regressed) >= 1
    text = re.sub(r"<[^>]+>", " ", dom)
    for c in regressed:
        drop = f"{result.classes.accuracy_change[c] * 100:+.1f}".replace("-", "−")
        assert result.class_names[c] in text and (drop in text or drop.replace("−", "-") in text), (c, drop)


def test_demo_report_in_chromium(demo_run: dict, tmp_path: Path) -> None:
    """The demo's real report: its top pairs by R and the agreement paragraph reach the rendered DOM."""
    import html as htmllib
    import json

    from .conftest import r_from_results

    out = demo_run["out"]
    page = out / "report.html"
    check_page(page, tmp_path, SECTIONS, "report_demo.png")
    dom = chromium(page, tmp_path, "--dump-dom").stdout
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    names = data["class_names"]
    r = r_from_results(data)
    a, b = np.triu_indices(len(names), 1)
    top = [f"{names[a[j]]} / {names[b[j]]}" for j in np.argsort(-r[a, b], kind="stable")[:5]]
    table = dom[dom.index('<table id="pairs-interference"'):]
    table = table[:table.index("</table>")]
    cells = [htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<tr[^>]*>\s*<td>(.*?)</td>", table, flags=re.S)]
    assert cells == top
    paragraph = re.search(r'<p id="agreement"[^>]*>(.*?)</p>', dom, flags=re.S)
    assert paragraph is not None and "On this model interference explains" in paragraph.group(1)
