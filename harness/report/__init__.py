"""The report stage: tables, charts, report.md/report.html and comparisons, drawn only from analyzed
runs (summary.json and the files beside it)."""
