"""README.md's results table is the quality benchmark's own, generated from its committed scores."""

from __future__ import annotations

import pandas as pd

from helpers import REPO

QUALITY = REPO / "benchmarks" / "quality"
SCORES = REPO / "benchmarks" / "results" / "quality" / "scores.csv"


def test_readme_results_are_the_committed_quality_scores(monkeypatch):
    monkeypatch.syspath_prepend(str(QUALITY))
    import report

    scores = pd.read_csv(SCORES)
    readme = (REPO / "README.md").read_text()
    assert report.readme_with_scores(readme, scores) == readme, "README.md's table differs: rerun run.py --quick"
    table = readme[readme.index(report.README_START):readme.index(report.README_END)]
    assert len(table.splitlines()) == 1 + 2 + scores["case"].nunique()  # marker, header, rule, a row per case
