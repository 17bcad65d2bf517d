"""`clbench report` on a sweep with several strategies, two scenarios, three seeds and one
failed run: tables against the run records, escaping, and rendering in a real browser."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main

PLUGIN = str(Path(__file__).parent / "plugins" / "faulty.py")
SWEEP = {
    "name": "report-test",
    "seeds": [0, 1, 2],
    "train": {"batch_size": 10, "device": "cpu"},
    "scenarios": [{"name": "permuted-mnist", "n_tasks": 3, "per_task": 60, "test_per_task": 150},
                  {"name": "split-mnist", "n_tasks": 2, "per_task": 60, "test_per_task": 150}],
    "strategies": [{"name": "naive"}, {"name": "er", "mem_size": 30, "replay_batch": 5},
                   {"name": "test-fails-seed-1"}, {"name": "<script>alert('x')</script>"}],
}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = tmp / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(SWEEP))
    out = tmp / "out"
    # one run fails (test-fails-seed-1, seed 1 on each scenario): exit status 1, the rest done
    assert main(["run", str(cfg), "--out", str(out), "--plugin", PLUGIN, "--no-progress"]) == 1
    assert main(["report", str(out)]) == 0
    return out


def _records(out):
    return [json.loads(p.read_text()) for p in out.glob("*/run.json")]


def test_report_files_are_written(report_dir):
    for name in ("report.md", "report.html", "summary.csv", "tables/permuted-mnist.csv", "tables/permuted-mnist.tex",
                 "tables/split-mnist.md", "plots/permuted-mnist__average_accuracy.png",
                 "plots/split-mnist__cost.svg", "plots/permuted-mnist__heatmap__er.png",
                 "plots/permuted-mnist__forgetting__naive.png", "plots/split-mnist__forgetting_bwt.png"):
        assert (report_dir / name).stat().st_size > 0, name


def test_table_values_are_those_of_the_run_records(report_dir):
    recs = _records(report_dir)
    for scenario in ("permuted-mnist", "split-mnist"):
        rows = {r["strategy"]: r for r in csv.DictReader(open(report_dir / "tables" / f"{scenario}.csv"))}
        for strategy in ("naive", "er"):
            accs = [r["metrics"]["acc"] for r in recs if r["scenario"] == scenario and r["strategy"] == strategy]
            assert len(accs) == 3
            assert float(rows[strategy]["acc_mean"]) == pytest.approx(sum(accs) / 3)
            forg = [r["metrics"]["forgetting"] for r in recs if r["scenario"] == scenario and r["strategy"] == strategy]
            assert float(rows[strategy]["forgetting_mean"]) == pytest.approx(sum(forg) / 3)
        failing = rows["test-fails-seed-1"]
        assert failing["runs"] == "2" and failing["failed"] == "1"


def test_markdown_report_has_tables_definitions_and_failures(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "# Forgetting report: report-test" in md
    assert "## permuted-mnist" in md and "## split-mnist" in md
    assert "| Strategy | Seeds | Failed | ACC | LA | BWT | FWT | Forgetting | Train s |" in md
    assert "divides BWT and FWT by T, not T-1" in md
    assert "RuntimeError: planned failure for seed 1" in md
    assert "Welch's unpaired two-sided t-test" in md
    assert "- Versions: " in md and "torch" in md and "- Hardware: " in md and "cores" in md
    assert "```yaml" in md and "report-test" in md


def test_html_is_self_contained_and_escaped(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 2 * 3 + 2 * 4 * 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert page.count("<table") == 2 + 1  # two scenarios and the failed runs


def test_report_in_a_real_browser(report_dir, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        pytest.skip("no chromium on this machine (make test installs Debian's chromium where it can)")
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((report_dir / "report.html").resolve().as_uri())
            page.wait_for_load_state("load")
            tables = page.locator("table")
            assert tables.count() == 3
            for i in range(tables.count()):
                box = tables.nth(i).bounding_box()
                assert box and box["width"] > 100 and box["height"] > 40
            sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
                                  "i.getBoundingClientRect().width, i.getBoundingClientRect().height])")
            assert len(sizes) >= 22
            assert all(done and nat > 0 and w > 0 and h > 0 for done, nat, w, h in sizes), sizes
            # sorting: click ACC twice -> descending order of the first table's ACC values
            header = page.locator("table").first.locator("th", has_text="ACC")
            header.click()
            header.click()
            values = page.evaluate("Array.from(document.querySelector('table').tBodies[0].rows)"
                                   ".map(r => parseFloat(r.cells[3].getAttribute('data-v')))")
            finite = [v for v in values if v == v]
            assert finite == sorted(finite, reverse=True) and len(finite) >= 3
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            page.emulate_media(media="print")
            assert page.locator("figure").first.bounding_box()["width"] > 0
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_continual_evaluation_columns_and_figures(tmp_path):
    """A sweep with ``eval_every`` and one without, in one folder: the first section's table has
    the continual-evaluation columns (means of the run records' values), the stability-gap and
    equal-compute figures and their definitions; the other has neither the columns nor the figure."""
    sweep = {"name": "curves", "seeds": [0, 1], "train": {"batch_size": 10, "device": "cpu", "eval_every": 3},
             "scenarios": [{"name": "permuted-mnist", "n_tasks": 2, "per_task": 60, "test_per_task": 100}],
             "strategies": [{"name": "naive"}, {"name": "er", "mem_size": 30, "replay_batch": 5}]}
    cfg, out = tmp_path / "curves.yaml", tmp_path / "out"
    cfg.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({**sweep, "name": "plain", "train": {"batch_size": 10, "device": "cpu"},
                                     "scenarios": [{**sweep["scenarios"][0], "n_tasks": 3}]}))
    assert main(["run", str(plain), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    head = "| Strategy | Seeds | Failed | ACC | LA | BWT | FWT | Forgetting | Train s | Grad/ex |"
    assert head + " AAA | min-ACC | WC-ACC | Gap depth | Online ACC |" in md
    assert md.count(head + "\n") == 1  # the section without curves ends at Grad/ex
    assert "**AAA**: average anytime accuracy" in md and "**Gap depth**: stability gap" in md
    recs = [r for r in _records(out) if r["curves"] is not None]
    assert len(recs) == 4
    tables = [{r["strategy"]: r for r in csv.DictReader(open(p))} for p in (out / "tables").glob("*.csv")]
    assert len(tables) == 2
    (rows,) = [t for t in tables if "aaa_mean" in t["naive"]]
    for strategy in ("naive", "er"):
        values = [r["metrics"]["aaa"] for r in recs if r["strategy"] == strategy]
        assert float(rows[strategy]["aaa_mean"]) == pytest.approx(sum(values) / 2)
        gpe = [r["timing"]["grad_per_example"] for r in recs if r["strategy"] == strategy]
        assert float(rows[strategy]["grad_per_example_mean"]) == pytest.approx(sum(gpe) / 2)
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert len([p for p in plots if p.endswith("__stability_gap.png")]) == 1
    assert len([p for p in plots if p.endswith("__equal_compute.png")]) == 2
