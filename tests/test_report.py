"""The report from templates (compare/report.py): prose in Jinja2 templates shipped with the package, tables through
``DataFrame.to_markdown``, and report.html as report.md through ``markdown`` with the plots embedded."""

from __future__ import annotations

import base64
import importlib.util
import math
import re
from importlib.resources import files
from pathlib import Path

import pytest

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare import report
from seqft_lightning.compare.load import load_jobs
from seqft_lightning.compare.plots import PlotResult
from tests.test_compare import build_study

TEMPLATES = ("report.md.j2", "summary.md.j2", "hypothesis.md.j2", "sections.md.j2", "report.html.j2", "figures.md.j2")


def test_table_keeps_the_cells_text_aligns_and_escapes_pipes():
    md = report.table(["variant", "chosen", "n"], [["`a|b`", "1e+04", 7], ["x", "007", "1.50"]], "llr")
    header, rule, first, second = md.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == ["variant", "chosen", "n"]
    assert re.fullmatch(r"\|:-+\|:-+\|-+:\|", rule)  # left, left, right
    assert "`a\\|b`" in first and "1e+04" in first  # an escaped pipe; numbers are not re-parsed
    assert second.split("|")[2].strip() == "007" and second.split("|")[3].strip() == "1.50"


def test_number_filters():
    assert report.pct(0.9123) == "91.23" and report.pct(0.9123, 1) == "91.2" and report.pp(0.012) == "+1.20"
    assert report.pp(-0.1425) == "-14.25" and report.pct(math.nan) == report.pp(None) == report.DASH
    assert report.number(3e6) == "3e+06" and report.number(1.5, ".2f") == "1.50"
    assert report.number(math.inf) == report.number(None) == report.number([1]) == report.DASH
    assert report.number('[1,"output"]', "g") == '[1,"output"]'  # a knob value that is no number, as it is
    assert report.cell(None) == report.cell({"n": 0}) == report.DASH
    assert report.cell({"n": 1, "mean": 0.5}) == "50.00 (n=1)"
    assert report.code("joint") == "`joint`"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[agg.Analysis, Path, bytes]:
    """The study of test_compare written with one drawn figure (in the answer) and one skipped figure."""
    sweep = build_study(tmp_path_factory.mktemp("report"))
    analysis, png = agg.analyse(load_jobs(sweep)), b"\x89PNG\r\n\x1a\n not really a picture"
    (sweep / "compare" / "plots").mkdir(parents=True)
    (sweep / "compare" / "plots" / "tradeoff.png").write_bytes(png)
    plots = [PlotResult("tradeoff", sweep / "compare" / "plots" / "tradeoff.png", section="answer"),
             PlotResult("confusion", None, "nothing to plot: needs data")]
    report.write_outputs(analysis, sweep, sweep / "compare", plots)
    return analysis, sweep / "compare", png


def test_report_follows_the_template(written):
    _, out, _ = written
    md = (out / "report.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("#")] == [
        "# Sweep comparison: study", "## Answer", "### Trade-off: target vs retained accuracy", "### Tuned variants",
        "### Verdict: sequential vs joint", "### Cost", "## Jobs", "## Summary over seeds",
        "## Hypothesis test and comparisons", "### Paired results", "### Per-seed values",
        "### With both sides tuned, per retention method", "### Every variant vs the pretrained baseline",
        "### Every variant vs joint", "## Plots", "### Confusion matrices"]
    caption = report._ENV.get_template("figures.md.j2").module.figures["tradeoff"][1]  # captions live in the template
    assert f"### Trade-off: target vs retained accuracy\n\n![{caption}](plots/tradeoff.png)\n\n*{caption}*\n" in md
    assert "### Confusion matrices\n\nSkipped: nothing to plot: needs data.\n" in md
    for name in ("report.md", "summary.md", "hypothesis.md"):
        text = (out / name).read_text()
        assert not re.search(r"\{[{%#]|[}%#]\}", text), name  # no template syntax left
        assert "\n\n\n" not in text and text.endswith("\n") and not text.endswith("\n\n"), name
        lines = text.splitlines()
        for i, line in enumerate(lines):  # every table: a blank line, header, alignment row, rows
            if line.startswith("|") and not lines[i - 1].startswith("|"):
                assert lines[i - 1] == "" and re.fullmatch(r"\|(:?-+:?\|)+", lines[i + 1]), (name, line)


def test_summary_and_hypothesis_share_the_report_sections(written):
    analysis, out, _ = written
    md, summary, hyp = ((out / n).read_text() for n in ("report.md", "summary.md", "hypothesis.md"))
    assert summary.startswith("# Summary: study\n\nCells are test metrics in percent")
    body = md[md.index("## Summary over seeds\n\n") + len("## Summary over seeds\n\n"):md.index("## Hypothesis test")]
    assert summary.endswith(body.rstrip("\n") + "\n")  # one macro writes both
    assert hyp.startswith("# Hypothesis: sequential fine-tuning beats joint fine-tuning\n\n**Verdict**\n\n- ")
    tests = md[md.index("Jobs are paired by seed"):md.index("## Plots")]
    assert hyp[hyp.index("Jobs are paired by seed"):].replace("\n## ", "\n### ") == tests.rstrip("\n") + "\n"
    verdicts = hyp.split("**Verdict with")[0].splitlines()
    assert len(analysis.hypothesis) == sum(line.startswith("- ") for line in verdicts)  # one bullet per test


def test_html_is_the_report_with_its_figures_embedded(written):
    _, out, png = written
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>Sweep comparison: study</title>" in html
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"' in html
    assert "<p><em>Target (y) vs retained (x) test accuracy" in html
    assert html.count("<table>") == len(re.findall(r"^\|(:?-+:?\|)+$", md, flags=re.M)) > 5
    assert "<h2>Jobs</h2>" in html and "<strong>supported</strong>" in html and "src=\"plots/" not in html
    tuned = html[html.index("<strong>Tuned variants and their references</strong>"):]
    tuned = tuned[tuned.index("<code>sequential+ewc (tuned)</code>"):]
    assert "s2: 10000*</td>" in tuned[:tuned.index("</tr>")]  # the fallback mark, not emphasis
    assert not re.search(r"\{[{%#]|\]\(|\|:?-", html)  # no template or Markdown syntax left


def test_templates_ship_with_the_package():
    folder = files("seqft_lightning.compare") / "templates"
    assert sorted(TEMPLATES) == sorted(p.name for p in folder.iterdir() if p.name.endswith(".j2"))
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["seqft_lightning.compare"]
    assert all(any(Path("templates", name).match(g) for g in globs) for name in TEMPLATES)
    assert importlib.util.find_spec("seqft_lightning.compare.document") is None  # the home-made document model
