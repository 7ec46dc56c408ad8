"""The HTML report: one self-contained file, every section, atomic, offline, large K, NaN as "—"."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from auditor import AuditResult
from auditor.report import render as report_render
from auditor.report import render_dance_report, render_report, sections, template_dir
from auditor.report.format import fmt_num
from auditor.report.render import SECTIONS, TemplateNotFoundError
from tests.report_fixtures import synthetic

IMG = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"[^>]*>')
URL = re.compile(r"https?://")


@pytest.fixture(scope="module")
def small() -> AuditResult:
    return AuditResult.from_dict(synthetic.small())


@pytest.fixture(scope="module")
def small_html(small: AuditResult, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "report.html"
    out = render_report(small, path)
    assert out == path
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def large() -> AuditResult:
    result = AuditResult.from_dict(synthetic.large_k(40))
    return result.with_dance(synthetic.dance(k=40, per_class=5))


@pytest.fixture(scope="module")
def large_html(large: AuditResult, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "large.html"
    render_report(large, path)
    return path.read_text(encoding="utf-8")


def png_size(uri: str) -> tuple[int, int]:
    from PIL import Image

    head, _, payload = uri.partition(",")
    assert head == "data:image/png;base64", head
    data = base64.b64decode(payload, validate=True)
    assert data, "empty image payload"
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def section(html: str, sid: str) -> str:
    """The HTML of one <section id=...> (sections do not nest)."""
    start = html.index(f'<section id="{sid}"')
    return html[start:html.index("</section>", start)]


def assert_offline(html: str) -> None:
    """No network address anywhere (only SVG/XLink namespace declarations would be allowed)."""
    stripped = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", html)
    assert not URL.search(stripped), URL.search(stripped)
    for tag in ("<script", "<link", "@import", "url("):
        assert tag not in stripped, tag


def test_template_dir_is_the_source_checkout() -> None:
    d = template_dir()
    assert d == Path(__file__).resolve().parent.parent / "reports" / "templates"
    assert (d / "base.html.j2").is_file()
    for name in ("summary", "per_class", "errors", "interference", "cct", "interference_models",
                 "label_dancing", "method"):
        assert (d / f"{name}.html.j2").is_file(), name


def test_template_dir_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "auditor" / "report" / "render.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(report_render, "__file__", str(fake))
    with pytest.raises(TemplateNotFoundError, match=r"report templates not found.*reports/templates.*_templates"):
        template_dir()


def test_every_section_is_present(small_html: str) -> None:
    assert small_html.startswith("<!DOCTYPE html>")
    for sid in SECTIONS:
        assert f'<section id="{sid}"' in small_html, sid
    assert small_html.count("<section ") == len(SECTIONS)


def test_every_image_is_a_png_data_uri_with_alt_and_caption(small_html: str) -> None:
    tags = IMG.findall(small_html)
    # confusion, pareto, interference, CCT, one per interference model
    assert len(tags) == 4 + 3
    for uri in tags:
        w, h = png_size(uri)
        assert w > 100 and h > 100
    for tag in re.findall(r"<img\b[^>]*>", small_html):
        alt = re.search(r'\balt="([^"]+)"', tag)
        assert alt and len(alt.group(1)) > 20, tag[:80]
    assert small_html.count("<figure>") == small_html.count("<figcaption>") == len(tags)


def test_no_network_address(small_html: str, large_html: str) -> None:
    assert_offline(small_html)
    assert_offline(large_html)


def test_summary_content(small: AuditResult, small_html: str) -> None:
    s = section(small_html, "summary")
    assert "net.onnx" in s and "pytorch 2.13.0" in s and "17 / 8" in s
    assert "989 values" in s and "Conv ×3" in s
    assert "20.0%" in s  # overall accuracy: 6 of 30
    assert "class 1" in s and "0.0%" in s  # worst class
    a, b, score = small.top_pairs_interference[0]
    assert f"{small.class_names[a]} / {small.class_names[b]}" in s and fmt_num(score) in s
    # gate verdicts with badges
    assert '<span class="badge fail">fail</span>' in s
    assert '<span class="badge skipped">skipped</span>' in s
    assert s.count('class="badge pass"') == 2


def test_no_gate_says_so(small: AuditResult, tmp_path: Path) -> None:
    path = render_report(small.with_gate(None), tmp_path / "r.html")
    s = section(path.read_text(encoding="utf-8"), "summary")
    assert "No gate configured" in s and "badge fail" not in s


def test_per_class_table(small: AuditResult, small_html: str) -> None:
    s = section(small_html, "per-class")
    rows = re.findall(r"<tr[^>]*>\s*<td class=\"name\">(.*?)</td>", s, re.S)
    assert rows == small.class_names
    # class 1: 5 of 6 samples predicted as class 4, 1 as class 0
    assert "class 4 (5, 83%), class 0 (1, 17%)" in s
    assert fmt_num(float(small.flatness.curvature[0])) in s


def test_method_reproducibility(small: AuditResult, small_html: str) -> None:
    s = section(small_html, "method")
    assert small.model["sha256"] in s and small.data["sha256"] in s
    assert "α_s rule" in s and "inputs" in s  # CCT perturbation strategy
    for name in small.options.to_dict():
        assert f"<code>{name}</code>" in s, name
    for name in small.versions:
        assert name in s
    assert "the same set" in s  # gradients came from the audit data


def test_dance_missing_shows_how_to_add(small_html: str) -> None:
    s = section(small_html, "label-dancing")
    assert "auditor audit ... --dance LOG" in s and "<img" not in s


def test_dance_section(small: AuditResult, tmp_path: Path) -> None:
    with_dance = small.with_dance(synthetic.dance(k=5))
    html = render_report(with_dance, tmp_path / "r.html").read_text(encoding="utf-8")
    s = section(html, "label-dancing")
    uris = IMG.findall(s)
    # curves, pair heatmap, a piano roll for each of the 4 classes that dance most
    assert len(uris) == 2 + 4
    for uri in uris:
        assert min(png_size(uri)) > 50
    assert "class 0" in s.split("Classes that dance most:")[1][:80]  # synthetic: class 0 dances most
    assert "Agreement with the post-hoc audit" in s
    agreement = with_dance.dance.agreement if with_dance.dance else None
    assert agreement is not None and agreement.interference is not None and agreement.confusion is not None
    row = re.search(r"<td>interference pairs</td>(.*?)</tr>", s, re.S)
    assert row and re.findall(r'<td class="n">(.*?)</td>', row.group(1)) == [
        fmt_num(agreement.interference.spearman), fmt_num(agreement.interference.top_k_overlap),
        fmt_num(agreement.interference.n_pairs)]
    assert "class 0 / class 1" in s  # the top dancing pair is listed


def test_dance_section_without_an_audit_to_compare(small: AuditResult, tmp_path: Path) -> None:
    path = render_dance_report(synthetic.dance(k=5), tmp_path / "d.html")
    s = section(path.read_text(encoding="utf-8"), "label-dancing")
    assert "Agreement" not in s and len(IMG.findall(s)) == 2 + 4


def test_standalone_dance_report(tmp_path: Path) -> None:
    path = render_dance_report(synthetic.dance(k=5), tmp_path / "dance.html", class_names=list("abcde"),
                               title="Dancing")
    html = path.read_text(encoding="utf-8")
    assert '<section id="label-dancing"' in html and "<title>Dancing</title>" in html
    assert_offline(html)
    uris = IMG.findall(html)
    assert len(uris) == 6
    for uri in uris:
        png_size(uri)
    # the analysis carries no names, so the given ones are used
    assert "class dancing notes of a" in html.lower() or "Class dancing notes of a" in html


def test_render_is_atomic(small: AuditResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.html"
    render_report(small, path)
    before = path.read_bytes()

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("figure failed")

    # the CCT figure is drawn mid-way: after the heatmaps, before the interference models
    monkeypatch.setattr(sections.figures, "cct_panels", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        render_report(small.with_gate(None), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_large_k_shows_the_top_classes_only(large: AuditResult, large_html: str) -> None:
    for sid in SECTIONS:
        assert f'<section id="{sid}"' in large_html, sid
    for sid in ("errors", "interference"):
        s = section(large_html, sid)
        assert "Showing 20 of 40 classes: those in the top pairs" in s
        assert "40×40 heatmap would be unreadable" in s
    for uri in IMG.findall(large_html):
        png_size(uri)
    s = section(large_html, "cct")
    assert "Panels for 12 of 39 ego classes" in s
    assert "the 5 classes whose loss rises most" in s
    assert "Showing 20 of 40 classes: those in the top dancing pairs" in section(large_html, "label-dancing")


def test_large_k_draws_no_40_by_40_heatmap(large: AuditResult, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: dict[str, list[tuple[int, ...]]] = {}
    for name in ("confusion_heatmap", "interference_heatmaps", "dancing_pair_heatmap"):
        original = getattr(sections.figures, name)

        def spy(matrix: np.ndarray, *args: object, _name: str = name, _original=original, **kwargs: object) -> str:
            shapes.setdefault(_name, []).append(np.shape(matrix))
            return _original(matrix, *args, **kwargs)

        monkeypatch.setattr(sections.figures, name, spy)
    panels: list[int] = []
    original_cct = sections.figures.cct_panels

    def spy_cct(p: list[dict], **kwargs: object) -> str:
        panels.append(len(p))
        assert all(len(panel["others"]) == sections.HURT_LARGE_K for panel in p)
        return original_cct(p, **kwargs)

    monkeypatch.setattr(sections.figures, "cct_panels", spy_cct)
    render_report(large, tmp_path / "r.html")
    assert set(shapes) == {"confusion_heatmap", "interference_heatmaps", "dancing_pair_heatmap"}
    assert all(shape == (20, 20) for drawn in shapes.values() for shape in drawn), shapes
    assert panels == [sections.MAX_CCT_PANELS]


def test_large_k_focus_is_the_top_pairs(large: AuditResult) -> None:
    focus = sections._focus_classes(large)
    assert len(focus) == sections.FOCUS_CLASSES
    a, b, _ = large.top_pairs_interference[0]
    assert focus[:2] == [a, b]
    c, d, _ = large.top_pairs_confusion[0]
    assert c in focus and d in focus


def test_nan_is_an_em_dash(large: AuditResult, large_html: str) -> None:
    absent = 39
    assert math.isnan(large.accuracy[absent]) and math.isnan(large.flatness.curvature[absent])
    s = section(large_html, "per-class")
    row = re.search(r'<tr class="skipped">\s*<td class="name">species 39</td>(.*?)</tr>', s, re.S)
    assert row, "the absent class is listed as skipped"
    cells = re.findall(r'<td class="n">(.*?)</td>', row.group(1))
    assert cells[0] == "0" and all(c == "—" for c in cells[1:]), cells
    assert "skipped: no samples in the audit data" in row.group(1)
    text = re.sub(r'src="data:[^"]*"', "", large_html)
    assert not re.search(r"\bnan\b", text, re.I)


@pytest.mark.parametrize(("value", "text"), [
    (float("nan"), "—"), (None, "—"), (np.float64("nan"), "—"), (0.0, "0"), (1.23456, "1.23"),
    (-0.5, "−0.5"), (1234567.0, "1,234,567"), (2e-6, "2.00e−06"), (7, "7"), (np.int64(12000), "12,000"),
    (float("inf"), "∞"),
])
def test_fmt_num(value: object, text: str) -> None:
    assert fmt_num(value) == text


def test_report_rebuilds_from_results_json(small: AuditResult, tmp_path: Path) -> None:
    """The report draws only from results.json: a round trip renders the same page."""
    again = AuditResult.from_dict(json.loads(json.dumps(small.to_dict())))
    a = render_report(small, tmp_path / "a.html").read_text(encoding="utf-8")
    b = render_report(again, tmp_path / "b.html").read_text(encoding="utf-8")
    assert a == b


def test_template_dir_falls_back_to_the_installed_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A wheel has no reports/ beside the package: templates come from auditor/_templates."""
    import tomllib

    fake = tmp_path / "site-packages" / "auditor" / "report" / "render.py"
    fake.parent.mkdir(parents=True)
    installed = tmp_path / "site-packages" / "auditor" / "_templates"
    installed.mkdir()
    (installed / "base.html.j2").write_text("{{ title }}")
    monkeypatch.setattr(report_render, "__file__", str(fake))
    assert template_dir() == installed
    # and the build really puts them there
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"] == {
        "reports/templates": "auditor/_templates"}


def _cells(html: str, table_id: str) -> list[list[str]]:
    table = html[html.index(f'<table id="{table_id}"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in rows if "<td" in r]


def test_where_and_why_lists_with_q_and_the_agreement(large: AuditResult, large_html: str) -> None:
    s = section(large_html, "summary")
    assert "says <strong>where the errors are</strong>" in s and "says <strong>why</strong>" in s
    names = large.class_names
    q = large.errors.soft_pairs()
    assert q is not None
    where = _cells(s, "pairs-confusion")
    for (a, b, n), row in zip(large.top_pairs_confusion[:5], where):
        assert row == [f"{names[a]} / {names[b]}", str(int(n)), fmt_num(float(q[a, b])),
                       fmt_num(float(large.interference.pair_score[a, b]))]
    why = _cells(s, "pairs-interference")
    assert [row[0] for row in why] == [f"{names[a]} / {names[b]}" for a, b, _ in large.top_pairs_interference[:5]]
    g = large.agreement
    assert f"precision@{g.k}" in s and f"AUC {g.auc:.2f}" in s and f"is {g.spearman:.2f}" in s
    assert f"interference explains {g.verdict()} of the confusion" in s
    e = section(large_html, "errors")
    assert "<th class=\"n\">Q</th>" in e and "Q is not in this results file" not in e


def test_upgraded_schema_1_result_says_q_is_missing(small: AuditResult, small_html: str) -> None:
    assert small.errors.soft_confusion is None
    assert "Q is not in this results file" in section(small_html, "errors")
    assert "schema 1.0" in section(small_html, "summary")
    assert "<th class=\"n\">Q</th>" not in section(small_html, "summary")


def test_ill_conditioned_rows_are_named(large: AuditResult, large_html: str) -> None:
    ill = [large.class_names[c] for c in np.flatnonzero(large.interference.ill_conditioned)]
    assert ill == ["species 05"]  # the fixture's class with loss 0.02
    s = section(large_html, "interference")
    assert "Ill-conditioned rows (marked † in the heatmaps" in s and "<strong>species 05</strong>" in s
    assert "Pairs by pair score R" in s and "pair score S" not in s
    m = section(large_html, "method")
    assert "Pair score R" in m and "Soft pair confusion Q" in m and "Agreement of R with P" in m


def test_agreement_text_without_errors(small: AuditResult) -> None:
    from dataclasses import replace

    from auditor.agreement import score_agreement

    none = score_agreement(small.interference.pair_score, np.zeros((5, 5)))
    text = sections.agreement_text(replace(small, agreement=none))
    assert text["verdict"] == "undefined" and "makes no errors on the audit data" in text["text"]
    undefined = score_agreement(np.full((5, 5), np.nan), np.ones((5, 5)))
    assert "R is undefined for every pair" in sections.agreement_text(replace(small, agreement=undefined))["text"]


def test_interference_model_table_gives_r_and_p_of_its_pair(small: AuditResult, small_html: str) -> None:
    import html as htmllib

    assert small.models, "the synthetic audit has an interference model"
    section = small_html[small_html.index('<section id="interference-models"'):]
    section = section[:section.index("</section>")]
    header = re.findall(r"<th>(.*?)</th>", section.split("</tr>")[0])
    assert header[4:6] == ["R", "P"], header
    rows = re.findall(r"<tr><td class=\"n\">.*?</tr>", section, flags=re.S)
    for m, row in zip(small.models, rows):
        cells = [htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row,
                                                                                          flags=re.S)]
        assert cells[4] == fmt_num(float(small.interference.pair_score[m.a, m.b]))
        assert cells[5] == str(int(small.errors.confusion[m.a, m.b] + small.errors.confusion[m.b, m.a]))
