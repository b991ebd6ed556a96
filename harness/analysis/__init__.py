"""The analysis stage: a pure function of a run directory's files (history, reconcile, samples) that
writes summary.json, checker.json and histograms.json."""
