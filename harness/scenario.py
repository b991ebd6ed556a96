"""Scenario files: YAML, validated strictly against the schema in docs/scenarios.md.

Durations are strings with a unit (``"500ms"``, ``"20s"``, ``"2m"``) or plain numbers of
seconds; inside the harness they are floats in seconds (fields end in ``_s``). An unknown key,
a wrong type or an impossible value is refused with the file, the field path, what was
expected and what was given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from harness.contract import Workload
from harness.errors import ScenarioError, UserError

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
PROFILES = ("strict", "relaxed", "volatile")
SERVICES = ("postgres", "redis", "temporal")


def parse_duration(value: Any) -> float:
    """``"250ms"`` -> 0.25; numbers are seconds. Raises ValueError with what is accepted."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '500ms', '20s' or '2m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("expected a duration like '500ms', '20s' or '2m'")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkloadSpec(_Strict):
    steps: int = Field(3, ge=1, le=1000)
    step_duration: Duration = 0.05
    payload_bytes: int = Field(256, ge=0, le=10_000_000)

    def to_workload(self) -> Workload:
        return Workload(self.steps, self.step_duration, self.payload_bytes)


class LoadSpec(_Strict):
    mode: Literal["open", "closed"] = "open"
    rate: float = Field(20.0, gt=0, le=100_000)
    arrival: Literal["uniform", "poisson"] = "uniform"
    concurrency: int = Field(10, ge=1, le=100_000)
    warmup: Duration = 3.0
    duration: Duration = 20.0
    drain_timeout: Duration = 60.0
    submit_timeout: Duration = 10.0

    @model_validator(mode="after")
    def _positive_duration(self) -> LoadSpec:
        if self.duration <= 0:
            raise ValueError("load.duration must be longer than 0s")
        return self


class WorkersSpec(_Strict):
    count: int = Field(2, ge=1, le=64)
    restart_delay: Duration = 1.0
    ready_timeout: Duration = 90.0


FaultKind = Literal["kill-worker", "pause-worker", "restart-store", "latency", "partition", "reset-connections"]
WORKER_FAULTS = ("kill-worker", "pause-worker")
STORE_FAULTS = ("restart-store",)
LINK_FAULTS = ("latency", "partition", "reset-connections")
NEEDS_DURATION = ("pause-worker", "latency", "partition")
FAULT_KINDS = WORKER_FAULTS + STORE_FAULTS + LINK_FAULTS


class FaultSpec(_Strict):
    """One entry of the nemesis schedule (docs/faults.md)."""

    kind: FaultKind
    target: str | None = None  # default: worker:0, service:store or link:store by kind
    at: Duration
    duration: Duration | None = None  # pause / partition / latency: time until the heal
    every: Duration | None = None  # repeat at this interval until the load ends
    clean: bool = False  # restart-store: SIGTERM and wait (a clean shutdown) instead of SIGKILL
    latency: Duration = 0.05  # latency fault: added one-way delay per chunk
    jitter: Duration = 0.0  # latency fault: uniform +- jitter

    @property
    def resolved_target(self) -> str:
        if self.target is not None:
            return self.target
        if self.kind in WORKER_FAULTS:
            return "worker:0"
        return "service:store" if self.kind in STORE_FAULTS else "link:store"

    def instances(self, load_end_s: float) -> list[float]:
        """Start times of every repetition."""
        if self.every is None:
            return [self.at]
        times, t = [], self.at
        while t < load_end_s:
            times.append(t)
            t += self.every
        return times


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    engines: list[str] = Field(min_length=1)
    durability: Literal["strict", "relaxed", "volatile"] = "strict"
    seed: int = 1
    workload: WorkloadSpec = WorkloadSpec()
    load: LoadSpec = LoadSpec()
    workers: WorkersSpec = WorkersSpec()
    faults: list[FaultSpec] = []
    engine_settings: dict[str, dict[str, Any]] = {}
    overrides: dict[str, Any] = Field(default_factory=dict, description="command-line overrides applied")

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        end = self.load.warmup + self.load.duration
        for i, fault in enumerate(self.faults):
            target = fault.resolved_target
            if fault.kind in WORKER_FAULTS and fault_targets(target, self.workers.count) is None:
                known = f"worker:0..{self.workers.count - 1}, worker:all"
                raise _FieldError(f"faults.{i}.target", f"a known target for {fault.kind} ({known})", target)
            if fault.kind in STORE_FAULTS and not _service_target(target, "service:"):
                raise _FieldError(f"faults.{i}.target", f"service:store or service:<{'|'.join(SERVICES)}>", target)
            if fault.kind in LINK_FAULTS and not _service_target(target, "link:"):
                raise _FieldError(f"faults.{i}.target", f"link:store or link:<{'|'.join(SERVICES)}>", target)
            if fault.at >= end:
                raise _FieldError(f"faults.{i}.at", f"a time before the load ends ({end:g}s)", fault.at)
            if fault.kind in NEEDS_DURATION:
                if not fault.duration:
                    raise _FieldError(f"faults.{i}.duration", f"a duration > 0 for {fault.kind}", fault.duration)
                if fault.at + fault.duration > end:
                    raise _FieldError(f"faults.{i}.duration",
                                      f"at most {end - fault.at:g}s (the fault must heal before the load ends)",
                                      fault.duration)
            elif fault.duration is not None:
                raise _FieldError(f"faults.{i}.duration", f"no duration for {fault.kind} (it heals by itself)",
                                  fault.duration)
            if fault.every is not None and fault.every <= (fault.duration or 0):
                raise _FieldError(f"faults.{i}.every", "an interval longer than the fault's duration", fault.every)
        for name in self.engine_settings:
            if name not in self.engines:
                raise _FieldError(f"engine_settings.{name}", f"one of the scenario's engines {self.engines}", name)
        return self

    @property
    def needs_proxy(self) -> bool:
        return any(f.kind in LINK_FAULTS for f in self.faults)

    @property
    def total_load_s(self) -> float:
        return self.load.warmup + self.load.duration


class _FieldError(ValueError):
    def __init__(self, path: str, expected: str, given: Any) -> None:
        super().__init__(f"{path}: expected {expected}, given {given!r}")
        self.path, self.expected, self.given = path, expected, given


def _service_target(target: str, prefix: str) -> bool:
    return target.startswith(prefix) and target.removeprefix(prefix) in ("store", *SERVICES)


def fault_targets(target: str, workers: int) -> list[int] | None:
    """Worker indices named by a target (``worker:1``, ``worker:all``, ``worker:0,2``), or None."""
    if not target.startswith("worker:"):
        return None
    rest = target.removeprefix("worker:")
    if rest == "all":
        return list(range(workers))
    try:
        indices = [int(part) for part in rest.split(",")]
    except ValueError:
        return None
    if not indices or any(i < 0 or i >= workers for i in indices):
        return None
    return indices


def _describe_error(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, _FieldError):
        return f"{source}: {ctx_error}"
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{source}: {path} is not a known field (see docs/scenarios.md)"
    if kind == "missing":
        return f"{source}: {path} is required"
    message = err["msg"].removeprefix("Value error, ")
    return f"{source}: {path}: {message}, given {err.get('input')!r}"


def parse(data: Any, source: str, overrides: dict[str, Any] | None = None) -> Scenario:
    """Validate a scenario document (already parsed YAML) with command-line overrides applied."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of scenario fields at the top level")
    doc = dict(data)
    applied: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        applied[key] = value
        if key == "engines":
            doc["engines"] = value
        elif key == "durability":
            doc["durability"] = value
        elif key in ("duration", "rate"):
            doc["load"] = {**doc.get("load", {}), key: value}
        elif key == "workers":
            doc["workers"] = {**doc.get("workers", {}), "count": value}
        else:
            raise UserError(f"unknown override {key!r}")
    doc["overrides"] = applied
    try:
        return Scenario.model_validate(doc)
    except ValidationError as exc:
        raise ScenarioError(_describe_error(source, exc)) from None


def load(path: Path | str, overrides: dict[str, Any] | None = None) -> Scenario:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such scenario file (the shipped ones are in scenarios/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse(data, str(path), overrides)
