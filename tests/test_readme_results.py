"""README.md's results table is the quality benchmark's own, generated from its committed scores."""

from __future__ import annotations

import pandas as pd

from helpers import REPO

QUALITY = REPO / "benchmarks" / "quality"
SCORES = REPO / "benchmarks" / "results" / "quality" / "scores.csv"


def test_readme_results_are_the_committed_quality_scores(monkeypatch):
    monkeypatch.syspath_prepend(str(QUALITY))
    import report
    import suite

    scores = pd.read_csv(SCORES)
    cases = [case for case in suite.CASES if case.name in set(scores["case"])]
    table = report.readme_table(report.summarize(scores), cases)
    readme = (REPO / "README.md").read_text()
    assert report.with_readme_table(readme, table) == readme, "README.md's table differs: rerun run.py --quick"
    assert len(table.splitlines()) == 2 + len(cases)
