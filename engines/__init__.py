"""Engine adapters shipped with durabench; each sub-package registers under ``durabench.engines``."""
