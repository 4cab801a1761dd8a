"""The report: built from a record folder alone, a landing page of claims, a page per paper, the checkout untouched."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from seminal import cli
from seminal.core import paths
from seminal.core.claims import Claim
from seminal.core.plots import line_plot
from seminal.core.report import build_report, mark, results_markdown, status_table
from seminal.syllabus import SYLLABUS, resolve

SEEDS = [0, 1, 2]
MOSTLY_FAILING = Claim("XOR is learned", "xor/success_rate", ">=", 0.5, "learned", "PDP ch. 8", bar="paper")
PAIRED = Claim("A beats B", "cmp/a_minus_b", ">", 0.0, "A wins", "Fig. 2", aggregate="k_of_n", bar="peer",
               paired=("arm/a", "arm/b"))


def fake_record(results: Path) -> list[dict]:
    """Two records as `seminal reproduce` writes them (claims through Claim.evaluate_seeds), one plot beside one."""
    results.mkdir(parents=True, exist_ok=True)
    line_plot(results / "backprop" / "curve.png", {"a": ([0, 1, 2], [0, 1, 4])}, xlabel="step", ylabel="a",
              title="curve")
    quick = {
        "paper": "backprop", "number": 1, "title": "Backpropagation (MLP in NumPy)", "citation": "R 1986",
        "preset": "quick", "seeds": SEEDS, "overrides": ["xor_starts=4"],
        "command": "seminal reproduce backprop --preset quick --seeds 3 --set xor_starts=4",
        "claims": [MOSTLY_FAILING.evaluate_seeds([0.1, 0.2, 1.8], SEEDS),
                   PAIRED.evaluate_seeds([2.0, -1.0, 3.0], SEEDS, {"arm/a": [3.0, 1.0, 4.0], "arm/b": [1, 2, 1]})],
        "metrics": {}, "seconds": 12.0, "run_seconds": [4.0, 4.0, 4.0],
        "runs": ["backprop/20261203-000000-s0", "backprop/20261203-000001-s1", "backprop/20261203-000002-s2"],
        "config": {"xor_starts": 4, "xor_lr": 0.5}, "commit": "0123456789ab-dirty", "dirty": True,
        "commit_from": "git", "machine": {"cpu": "Test CPU 9000", "cores": 2, "gpu": None},
        "date": "2026-12-03T00:00:00Z", "module": "seminal.papers.foundations.backprop",
        "plots": ["backprop/curve.png"],
    }
    quick["passed"] = all(c["passed"] for c in quick["claims"])
    full = dict(quick, paper="lenet5", number=2, title="LeNet-5", preset="full", seeds=[0], overrides=[],
                claims=[Claim("error", "test/error", "<=", 0.011, "0.95%", "Fig. 9").evaluate_seeds([0.0106], [0])],
                commit=None, dirty=None, command=None, plots=[], passed=True)
    (results / "backprop.json").write_text(json.dumps(quick))
    (results / "lenet5.full.json").write_text(json.dumps(full))
    return [quick, full]


def _digests() -> list[str]:
    return [hashlib.sha256((paths.PROJECT_ROOT / p).read_bytes()).hexdigest() for p in ("README.md", "RESULTS.md")]


class _Parse(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.rows, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.rows += tag == "tr"
        self.refs += [a[k] for k in ("href", "src") if k in a]

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Parse:
    p = _Parse()
    p.feed(path.read_text())
    p.text = " ".join(" ".join(p.text).split())
    return p


def test_report_writes_only_its_folder_and_every_reference_resolves(tmp_path):
    fake_record(tmp_path / "results")
    before = _digests()
    assert cli.main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "site")]) == 0
    assert _digests() == before  # README's table and RESULTS.md change only with --record
    site = tmp_path / "site"
    assert sorted(p.name for p in site.glob("*.html")) == ["backprop.html", "index.html", "lenet5.html"]
    for page in site.glob("*.html"):
        for ref in _parse(page).refs:
            if not re.match(r"[a-z]+:|#", ref):
                assert (site / ref.split("#")[0]).is_file(), f"{page.name}: {ref}"
    assert (site / "backprop" / "curve.png").read_bytes() == (tmp_path / "results/backprop/curve.png").read_bytes()


def test_landing_page_is_the_claims_table_with_k_of_n(tmp_path):
    fake_record(tmp_path / "results")
    build_report(tmp_path / "results", tmp_path / "site")
    index = _parse(tmp_path / "site" / "index.html")
    assert index.rows == 1 + 3  # header + one row a claim: no row for a planned paper
    assert "backprop.html" in index.refs and "lenet5.html" in index.refs
    assert "1 of 3 seeds" in index.text and "2 of 3 seeds" in index.text and "1 of 1 seed" in index.text
    assert "pass on the mean; most seeds fail" in index.text  # the mean passes, two of three seeds fail
    assert "bar: the paper's figure" in index.text and "bar: a peer's published figure" in index.text
    planned = [e for e in SYLLABUS if not e.implemented and not e.notes_path.exists()]
    assert planned and f"{planned[0].number} {planned[0].title}" in index.text
    assert index.text.index("A beats B") < index.text.index(planned[0].title)


def test_paper_page_has_command_config_commit_machine_seeds_and_notes(tmp_path):
    fake_record(tmp_path / "results")
    build_report(tmp_path / "results", tmp_path / "site")
    page = _parse(tmp_path / "site" / "backprop.html")
    for text in ("seminal reproduce backprop --preset quick --seeds 3 --set xor_starts=4", "0123456789ab (dirty",
                 "Test CPU 9000", "xor_lr", "overrides xor_starts=4", "seed 2", "1.8 ✓", "0.1 ✗",
                 "arm arm/b : 1, 2, 1", "on 2 of 3 seeds"):
        assert text in page.text, text
    notes = resolve("backprop").notes_path.read_text()
    heading = re.search(r"^## (.+)$", notes, re.M)[1]
    assert f"<h2>{heading}</h2>" in (tmp_path / "site" / "backprop.html").read_text()  # markdown rendered
    assert "unknown" in _parse(tmp_path / "site" / "lenet5.html").text  # a record without a commit says so


def test_markdown_and_readme_table_show_k_of_n_and_flags(tmp_path):
    quick, _ = fake_record(tmp_path / "results")
    assert mark(quick["claims"][0]) == "⚠️" and mark(quick["claims"][1]) == "✅"
    table = status_table(tmp_path / "results")
    row = next(line for line in table.splitlines() if "XOR is learned" in line)
    assert "⚠️" in row and "1 of 3 seeds" in row and "overrides: xor_starts=4" in row
    md = results_markdown(tmp_path / "results")
    assert "s0: 0.1, s1: 0.2, s2: 1.8" in md and "0123456789ab (dirty" in md and "unknown" in md
    assert "![curve](results/backprop/curve.png)" in md and "2 of 3 seeds" in md


def test_committed_records_without_the_new_fields_still_render(tmp_path):
    results = paths.PROJECT_ROOT / "results"
    build_report(results, tmp_path / "site")
    index = _parse(tmp_path / "site" / "index.html").text
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    assert records
    for r in records:
        assert (tmp_path / "site" / f"{r['paper']}.html").is_file()
        for c in r["claims"]:
            check = Claim(c["name"], c["metric"], c["op"], c["threshold"], "", "").check
            assert " ".join(c["name"].split()) in index
            assert f"{sum(check(v) for v in c['values'])} of {len(c['values'])} seed" in index


def test_time_is_the_seed_runs_own_even_when_reproduce_reused_them(tmp_path):
    """A record written by `reproduce --resume` from finished seed-runs took ~0 s itself: the report shows the
    seed-runs' summed time (4 + 4 + 4 = 12 s in the fake), never '0 s in all'; a fresh record shows both."""
    quick, _ = fake_record(tmp_path / "results")
    reused = dict(quick, seconds=0.0, run_seconds=[20.0, 30.0, 25.0])
    (tmp_path / "results" / "backprop.json").write_text(json.dumps(reused))
    md = results_markdown(tmp_path / "results")
    assert "75 s of seed-runs (reused from earlier runs" in md and "0 s in all" not in md
    build_report(tmp_path / "results", tmp_path / "site")
    page = _parse(tmp_path / "site" / "backprop.html").text
    assert "75 s of seed-runs (reused from earlier runs" in page and "0 s in all" not in page
    fresh = dict(quick, seconds=9.0)  # two jobs at once: 9 s wall for 12 s of seed-runs
    (tmp_path / "results" / "backprop.json").write_text(json.dumps(fresh))
    assert "12 s of seed-runs, 9 s wall" in results_markdown(tmp_path / "results")
