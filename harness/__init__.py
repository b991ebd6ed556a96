"""durabench: a benchmark and fault-injection checker for durable workflow engines."""

__version__ = "0.1.0"
