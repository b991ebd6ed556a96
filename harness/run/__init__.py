"""The run stage: servers, workers, the load driver, faults and the fault proxy. It writes a run's
history files; everything derived from them is left to harness/analysis."""
