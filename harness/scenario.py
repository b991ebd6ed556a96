"""Scenario files: YAML, validated strictly against the schema in docs/scenarios.md.

Durations are strings with a unit (``"500ms"``, ``"20s"``, ``"2m"``) or plain numbers of
seconds; inside the harness they are floats in seconds (fields end in ``_s``). An unknown key,
a wrong type or an impossible value is refused with the file, the field path, what was
expected and what was given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness import program
from harness.contract import Workload
from harness.errors import ScenarioError, UserError

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
PROFILES = ("strict", "relaxed", "volatile")
SERVICES = ("postgres", "redis", "temporal", "restate", "temporal-server", "kafka")


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


# -- workflow programs (docs/scenarios.md "workload.program"; compiled by harness/program.py)

DIST_PRESETS: dict[str, dict[str, Any]] = {
    # an LLM API call: lognormal, median 1.5 s, p99 8 s (scale it with api.time_scale for quick runs)
    "llm": {"dist": "lognormal", "p50": 1.5, "p99": 8.0},
}


def _dist_shorthand(value: Any) -> Any:
    """A plain duration is a fixed distribution; a preset name is that preset."""
    if isinstance(value, str) and value in DIST_PRESETS:
        return dict(DIST_PRESETS[value])
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    return value


class DistSpec(_Strict):
    """A distribution of durations: ``fixed`` (value), ``uniform`` (min, max) or ``lognormal`` (p50, p99)."""

    dist: Literal["fixed", "uniform", "lognormal"]
    value: Duration | None = None
    min: Duration | None = None
    max: Duration | None = None
    p50: Duration | None = None
    p99: Duration | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> DistSpec:
        wanted = {"fixed": ("value",), "uniform": ("min", "max"), "lognormal": ("p50", "p99")}[self.dist]
        for name in ("value", "min", "max", "p50", "p99"):
            given = getattr(self, name)
            if name in wanted and given is None:
                raise ValueError(f"a {self.dist} distribution needs {' and '.join(wanted)}")
            if name not in wanted and given is not None:
                raise ValueError(f"{name} is not a field of a {self.dist} distribution (it takes {', '.join(wanted)})")
        if self.dist == "uniform" and self.max < self.min:  # type: ignore[operator]  # both set (checked above)
            raise ValueError(f"max ({self.max:g}s) must not be below min ({self.min:g}s)")
        if self.dist == "lognormal":
            if self.p50 <= 0:  # type: ignore[operator]  # set (checked above)
                raise ValueError("a lognormal distribution needs p50 > 0")
            if self.p99 < self.p50:  # type: ignore[operator]
                raise ValueError(f"p99 ({self.p99:g}s) must not be below p50 ({self.p50:g}s)")
        return self

    @property
    def upper_s(self) -> float:
        """The value it stays under (fixed: the value, uniform: max, lognormal: p99)."""
        return float({"fixed": self.value, "uniform": self.max, "lognormal": self.p99}[self.dist] or 0.0)

    def to_json(self, scale: float = 1.0) -> dict[str, Any]:
        """The language-neutral form in the worker config (docs/engines.md): seconds, ``_s`` suffixes."""
        if self.dist == "fixed":
            return {"dist": "fixed", "value_s": float(self.value or 0) * scale}
        if self.dist == "uniform":
            return {"dist": "uniform", "min_s": float(self.min or 0) * scale, "max_s": float(self.max or 0) * scale}
        return {"dist": "lognormal", "p50_s": float(self.p50 or 0) * scale, "p99_s": float(self.p99 or 0) * scale}


Dist = Annotated[DistSpec, BeforeValidator(_dist_shorthand)]


class WorkStage(_Strict):
    """Today's step: sleep a drawn duration, return a payload to the next stage."""

    kind: Literal["work"]
    duration: Dist = DistSpec(dist="fixed", value=0.05)
    payload_bytes: int = Field(256, ge=0, le=10_000_000)


class RetrySpec(_Strict):
    """The engine's retry policy for one call stage (each engine maps it onto its own mechanism)."""

    max_attempts: int = Field(10, ge=1, le=1000)  # attempts in all, the first included
    initial_backoff: Duration = 1.0
    multiplier: float = Field(2.0, ge=1.0, le=100.0)
    max_backoff: Duration = 30.0
    attempt_timeout: Duration = 30.0  # the client gives up on one attempt after this long

    @model_validator(mode="after")
    def _sane(self) -> RetrySpec:
        if self.max_backoff < self.initial_backoff:
            raise ValueError(f"max_backoff ({self.max_backoff:g}s) must not be below initial_backoff "
                             f"({self.initial_backoff:g}s)")
        if self.attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be longer than 0s")
        return self


class CallStage(_Strict):
    """An HTTP request to the flaky API (``workload.api``), retried by the engine's own mechanism."""

    kind: Literal["call"]
    retry: RetrySpec = RetrySpec()


class SleepStage(_Strict):
    """A durable timer: the workflow wakes at the due time even if its worker died in between."""

    kind: Literal["sleep"]
    duration: Duration

    @model_validator(mode="after")
    def _positive(self) -> SleepStage:
        if self.duration <= 0:
            raise ValueError("a sleep needs a duration longer than 0s")
        return self


class WaitSignalStage(_Strict):
    """Block until the driver sends the named signal, ``delay`` after the workflow started waiting."""

    kind: Literal["wait_signal"]
    signal: str = Field("approve", pattern=r"^[A-Za-z0-9_.-]+$")
    delay: Dist = DistSpec(dist="fixed", value=1.0)
    timeout: Duration = 300.0
    on_timeout: Literal["fail", "continue"] = "fail"

    @model_validator(mode="after")
    def _timeout_after_delay(self) -> WaitSignalStage:
        if self.timeout <= self.delay.upper_s:
            raise ValueError(f"timeout ({self.timeout:g}s) must exceed the signal delay's upper value "
                             f"({self.delay.upper_s:g}s), else signals arrive after the wait gave up")
        return self


class EffectStage(_Strict):
    """A write into the run's application database (table ``durabench_effects``)."""

    kind: Literal["effect"]
    idempotency: Literal["none", "key"] = "none"
    duration: Duration = 0.0  # the step's time after its insert (docs/scenarios.md): where a crash lands


BranchStage = Annotated[WorkStage | CallStage | SleepStage | EffectStage, Field(discriminator="kind")]


class ParallelStage(_Strict):
    """Fan-out / fan-in: ``branches`` copies of ``program`` run concurrently, then joined."""

    kind: Literal["parallel"]
    branches: int = Field(2, ge=1, le=100)
    program: list[BranchStage] = Field(min_length=1, max_length=100)


Stage = Annotated[WorkStage | CallStage | ParallelStage | SleepStage | WaitSignalStage | EffectStage,
                  Field(discriminator="kind")]


class ApiSpec(_Strict):
    """The flaky API's behaviour (harness/run/flaky_api.py), for ``call`` stages."""

    latency: Dist = DistSpec(dist="fixed", value=0.01)
    time_scale: float = Field(1.0, gt=0, le=1000)  # multiplies every latency (e.g. 0.1 for the llm preset)
    error_rate: float = Field(0.0, ge=0, le=1)  # fraction of requests answered 500 or 503 (half each)
    hang_rate: float = Field(0.0, ge=0, le=1)  # fraction never answered until the client gives up
    rate_limit: float = Field(0.0, ge=0, le=1_000_000)  # requests/s admitted (token bucket); 0 = no limit
    burst: int = Field(0, ge=0, le=1_000_000)  # bucket size; 0 = one second of rate_limit (at least 1)

    @model_validator(mode="after")
    def _rates(self) -> ApiSpec:
        if self.error_rate + self.hang_rate > 1:
            raise ValueError(f"error_rate + hang_rate must be at most 1, given {self.error_rate + self.hang_rate:g}")
        return self


class WorkloadSpec(_Strict):
    steps: int = Field(3, ge=1, le=1000)
    step_duration: Duration = 0.05
    payload_bytes: int = Field(256, ge=0, le=10_000_000)
    program: list[Stage] | None = Field(None, min_length=1, max_length=200)
    api: ApiSpec = ApiSpec()

    @model_validator(mode="after")
    def _program_or_chain(self) -> WorkloadSpec:
        # A dumped scenario (manifest, saturate's step scenarios) carries every field: only values other
        # than the defaults count as given.
        api_given = "api" in self.model_fields_set and self.api != ApiSpec()
        if self.program is None:
            if api_given:
                raise _FieldError("workload.api", "no api without a program that has a call stage", "api")
            return self
        defaults = {"step_duration": 0.05, "payload_bytes": 256}
        given = [f for f, d in defaults.items() if f in self.model_fields_set and getattr(self, f) != d]
        if given:
            raise _FieldError(f"workload.{given[0]}", "either a program or the steps/step_duration/payload_bytes "
                              "shorthand, not both", getattr(self, given[0]))
        compiled = program.compile_stages(self.program)
        n = program.count_steps(compiled)
        if "steps" in self.model_fields_set and self.steps != n:  # a dumped manifest carries the computed count
            raise _FieldError("workload.steps", f"no steps with a program (or its stage count, {n})", self.steps)
        if api_given and "call" not in program.kinds(compiled):
            raise _FieldError("workload.api", "no api without a call stage in the program", "api")
        object.__setattr__(self, "steps", n)  # the number of stage indices: what the live view and checker count
        return self

    def to_workload(self, seed: int) -> Workload:
        """What every worker receives; ``seed`` is the scenario's (it decides every drawn duration)."""
        compiled = program.compile_workload(self)
        if self.program is None:
            return Workload(self.steps, self.step_duration, self.payload_bytes, compiled, seed)
        payload = max((s["payload_bytes"] for s in program.walk(compiled) if s["kind"] == "work"), default=0)
        return Workload(self.steps, program.sizing_duration_s(compiled), payload, compiled, seed)


class LoadSpec(_Strict):
    mode: Literal["open", "closed"] = "open"
    rate: float = Field(20.0, gt=0, le=100_000)
    arrival: Literal["uniform", "poisson"] = "uniform"
    concurrency: int = Field(10, ge=1, le=100_000)
    warmup: Duration = 3.0
    duration: Duration = 20.0
    drain_timeout: Duration = 60.0
    drain_quiet: Duration = 30.0  # stop draining once no step started or ended for this long
    submit_timeout: Duration = 10.0
    generator: Literal["pacer", "locust"] = "pacer"  # locust: Locust processes POST to HTTP front doors
    locust_workers: int = Field(1, ge=1, le=64)  # Locust worker processes (generator: locust)
    front_doors: int = Field(1, ge=1, le=64)  # front-door processes holding the engine client (generator: locust)
    locust_remote_workers: int = Field(0, ge=0, le=64)  # Locust workers joining from other hosts (locust-worker)
    listen_host: str = Field("127.0.0.1", pattern=r"^[A-Za-z0-9_.:-]+$")  # where the master and front doors listen
    # submit: the driver starts each workflow through the engine's client; kafka: the driver produces one event
    # per arrival to a Kafka topic and the engine's workers consume it (harness/run/eventsource.py)
    source: Literal["submit", "kafka"] = "submit"
    partitions: int = Field(4, ge=1, le=256)  # partitions of the event topic (source: kafka)

    @model_validator(mode="after")
    def _positive_duration(self) -> LoadSpec:
        if self.duration <= 0:
            raise ValueError("load.duration must be longer than 0s")
        if self.generator == "locust" and self.mode != "open":
            raise _FieldError("load.mode", "open with generator: locust (Locust drives an open loop only)", self.mode)
        if self.generator == "pacer":
            for key, default in (("locust_workers", 1), ("front_doors", 1), ("locust_remote_workers", 0),
                                 ("listen_host", "127.0.0.1")):
                if getattr(self, key) != default:  # defaults pass, so a dumped scenario validates again
                    raise _FieldError(f"load.{key}", "no value with generator: pacer (it applies to generator: locust)",
                                      getattr(self, key))
        if self.source == "kafka":
            if self.generator != "pacer":
                raise _FieldError("load.generator", "pacer with source: kafka (the driver is the event producer)",
                                  self.generator)
            if self.mode != "open":
                raise _FieldError("load.mode", "open with source: kafka (events are produced open-loop)", self.mode)
        elif self.partitions != 4:
            raise _FieldError("load.partitions", "no value with source: submit (it applies to source: kafka)",
                              self.partitions)
        return self


class ContainersSpec(_Strict):
    """``containers:`` of deploy: containers (docs/containers.md). ``workers_daemon``: the Docker daemon
    (a URL such as ``ssh://user@host`` or ``tcp://host:2376``, or a Docker context name) that runs the
    worker containers, while the servers and the driver stay with durabench's own daemon ("Multi-host");
    ``advertise``: this machine's IP address as the workers' host reaches it. The servers' ports and the
    ledger collector are then published on that address too (else on loopback only)."""

    workers_daemon: str | None = Field(None, min_length=1)
    advertise: str | None = None

    @field_validator("advertise")
    @classmethod
    def _an_ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("an IP address of this machine (the servers' ports are published on it)") from None
        if address.is_loopback or address.is_unspecified:
            raise ValueError("an address of this machine that the workers' host reaches (not loopback, not 0.0.0.0)")
        return value

    @model_validator(mode="after")
    def _together(self) -> ContainersSpec:
        if (self.workers_daemon is None) != (self.advertise is None):
            given, needed = ("workers_daemon", "advertise") if self.advertise is None else ("advertise",
                                                                                            "workers_daemon")
            raise _FieldError(f"containers.{needed}", f"a value: {given} and {needed} go together "
                              "(docs/containers.md, \"Multi-host\")", None)
        return self


class WorkersSpec(_Strict):
    count: int = Field(2, ge=1, le=64)
    restart_delay: Duration = 1.0
    ready_timeout: Duration = 90.0
    ledger: Literal["direct", "shipped"] = "direct"  # shipped: each worker a "host" shipping its ledger over HTTP
    remote: int = Field(0, ge=0, le=64)  # the last `remote` workers run elsewhere (durabench worker --run URL)
    collector_host: str = Field("127.0.0.1", pattern=r"^[A-Za-z0-9_.:-]+$")  # where the ledger collector listens

    @model_validator(mode="after")
    def _remote_needs_shipping(self) -> WorkersSpec:
        if self.remote > self.count:
            raise _FieldError("workers.remote", f"at most workers.count ({self.count})", self.remote)
        if self.remote and self.ledger != "shipped":
            raise _FieldError("workers.ledger", "shipped when workers.remote > 0 (remote workers ship their ledger)",
                              self.ledger)
        return self


class FloorsSpec(_Strict):
    """Calibration floors measured at the start of every engine run (harness/run/floors.py)."""

    enabled: bool = True
    iterations: int = Field(300, ge=10, le=100_000)  # round trips per store floor
    rate_duration: Duration = 2.0  # length of the N-connection write-rate measurement
    connections: int = Field(0, ge=0, le=1000)  # N of the rate measurement; 0 = from the engine's settings
    workflow_duration: Duration = 3.0  # unloaded workflows (1 in flight) before the load; 0 = none


class ResourcesSpec(_Strict):
    """Resource sampling during the run (harness/run/resources.py)."""

    interval: Duration = 1.0  # sampling period; 0 = no sampling
    pss: bool = True  # also read proportional set sizes (/proc/<pid>/smaps_rollup)
    idle: Duration = 0.0  # idle window of the servers before workers start (integration cost); 0 = none
    # workers up, nothing submitted, just before the load: the per-second part of every store cost
    # (polling, housekeeping), subtracted to get the per-workflow part (harness/analysis/cost.py); 0 = none
    baseline: Duration = 5.0


class SaturateSpec(_Strict):
    """Defaults of ``durabench saturate`` (harness/cli/saturate.py); command-line flags override them."""

    start_rate: float = Field(10.0, gt=0, le=100_000)
    factor: float = Field(1.5, gt=1, le=10)
    max_rate: float = Field(5000.0, gt=0, le=100_000)
    p99_target: Duration = 5.0  # end-to-end p99 above this: the rate is not sustainable
    min_throughput_ratio: float = Field(0.95, gt=0, le=1)  # completions/s below this x offered: not sustained
    step_duration: Duration = 10.0  # measured length of each rate step
    warmup: Duration = 3.0
    repetitions: int = Field(1, ge=1, le=100)


class ExternalServiceSpec(_Strict):
    """A server the user already runs (``services.<name>``): durabench connects to it instead of starting one."""

    url: str = Field(min_length=1)


EXTERNAL_SCHEMES = {"postgres": ("postgresql://", "postgres://"), "redis": ("redis://", "rediss://"), "temporal": ()}

ServerValue = str | int | float | bool
SETTABLE_SERVICES = ("postgres", "redis", "temporal-server")


class VariantSpec(_Strict):
    """One configuration of a sweep: every engine of the scenario runs once per variant, on fresh
    servers, and appears in the results as ``<engine>@<variant>``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    server_settings: dict[str, dict[str, ServerValue]] = {}
    engine_settings: dict[str, dict[str, Any]] = {}


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
    def container_target(self) -> bool:
        """A partition of a worker or service container (deploy: containers), not of a proxied link."""
        return self.kind == "partition" and self.resolved_target.startswith(("worker:", "service:"))

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


class SloLimits(_Strict):
    """Limits of one engine's results (docs/scenarios.md, ``slo``); a field left out is not judged."""

    max_e2e_p99: Duration | None = None  # end-to-end latency p99
    max_e2e_p99_9: Duration | None = None  # end-to-end latency p99.9
    min_throughput_ratio: float | None = Field(None, ge=0, le=10)  # throughput / offered rate
    max_recovery: Duration | None = None  # every fault: until every affected workflow finished
    max_lost: int | None = Field(None, ge=0)
    max_replayed: int | None = Field(None, ge=0)  # replayed completed steps
    max_duplicated: int | None = Field(None, ge=0)  # duplicated steps

    def over(self, base: SloLimits) -> SloLimits:
        """These limits, with the fields left out taken from ``base``."""
        return base.model_copy(update={k: v for k, v in self if v is not None})


class SloSpec(_Strict):
    """Service-level objectives judged by ``--fail-on slo`` (harness gates): ``all`` for every
    engine, ``engines.<name>`` over it for one engine (and its variants)."""

    all: SloLimits = SloLimits()
    engines: dict[str, SloLimits] = {}

    def limits_for(self, result_name: str) -> SloLimits:
        """The limits of one result (``dbos``, or ``dbos@variant`` in a sweep)."""
        engine = result_name.split("@", 1)[0]
        own = self.engines.get(result_name) or self.engines.get(engine)
        return own.over(self.all) if own is not None else self.all

    @property
    def empty(self) -> bool:
        return not any(v is not None for limits in (self.all, *self.engines.values()) for _, v in limits)


USE_CASES = ("ai-agent", "data-pipeline", "business-process", "background-jobs", "exactly-once-events")
UseCase = Literal["ai-agent", "data-pipeline", "business-process", "background-jobs", "exactly-once-events"]


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    usecase: UseCase | None = None  # which answer table and chart the report's "Use case" section draws
    engines: list[str] = Field(min_length=1)
    durability: Literal["strict", "relaxed", "volatile"] = "strict"
    deploy: Literal["processes", "containers"] = "processes"
    containers: ContainersSpec = ContainersSpec()
    seed: int = Field(1, ge=-(2**63), lt=2**63)  # Go workers read it as an int64 (every drawn duration)
    workload: WorkloadSpec = WorkloadSpec()
    load: LoadSpec = LoadSpec()
    workers: WorkersSpec = WorkersSpec()
    faults: list[FaultSpec] = []
    engine_settings: dict[str, dict[str, Any]] = {}
    server_settings: dict[str, dict[str, ServerValue]] = {}  # per service, over the durability profile's
    services: dict[str, ExternalServiceSpec] = {}  # servers the user already runs, by service name
    variants: list[VariantSpec] = []
    floors: FloorsSpec = FloorsSpec()
    resources: ResourcesSpec = ResourcesSpec()
    saturate: SaturateSpec = SaturateSpec()
    slo: SloSpec = SloSpec()
    overrides: dict[str, Any] = Field(default_factory=dict, description="command-line overrides applied")
    # the file it was loaded from, as given (:func:`load`; not a YAML key): the manifest's scenario_file
    _source_file: str | None = PrivateAttr(default=None)

    @property
    def source_file(self) -> str | None:
        return self._source_file

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        _check_unique_engines(self.engines)
        if self.containers.workers_daemon is not None and self.deploy != "containers":
            raise _FieldError("containers.workers_daemon", "deploy: containers (the workers' daemon places worker "
                              "containers)", self.containers.workers_daemon)
        for name in self.slo.engines:
            if name not in self.engines:
                raise _FieldError(f"slo.engines.{name}", f"one of the scenario's engines {self.engines}", name)
        end = self.load.warmup + self.load.duration
        for i, fault in enumerate(self.faults):
            target = fault.resolved_target
            if fault.kind in WORKER_FAULTS and fault_targets(target, self.workers.count) is None:
                known = f"worker:0..{self.workers.count - 1}, worker:all"
                raise _FieldError(f"faults.{i}.target", f"a known target for {fault.kind} ({known})", target)
            local = self.workers.count - self.workers.remote
            if fault.kind in WORKER_FAULTS and any(w >= local for w in fault_targets(target, self.workers.count) or []):
                raise _FieldError(
                    f"faults.{i}.target", "a worker durabench runs itself "
                    f"({f'worker:0..{local - 1}' if local else 'none here'}): "
                    f"worker:{local}..{self.workers.count - 1} run on other hosts (workers.remote), where durabench "
                    f"cannot {fault.kind.removesuffix('-worker')} them", target)
            if fault.kind in STORE_FAULTS and not _service_target(target, "service:"):
                raise _FieldError(f"faults.{i}.target", f"service:store or service:<{'|'.join(SERVICES)}>", target)
            if fault.container_target:
                if self.deploy != "containers":
                    raise _FieldError(f"faults.{i}.target", "link:store or link:<service> (a partition of a worker "
                                      "or service container needs deploy: containers)", target)
                if not (_service_target(target, "service:") or fault_targets(target, self.workers.count)):
                    known = f"worker:0..{self.workers.count - 1}, worker:all, service:store"
                    raise _FieldError(f"faults.{i}.target", f"a known target for a container partition ({known})",
                                      target)
            elif fault.kind in LINK_FAULTS:
                if not _service_target(target, "link:"):
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
        _check_server_settings("server_settings", self.server_settings)
        for svc, ext in self.services.items():
            if svc not in EXTERNAL_SCHEMES:  # restate: always started by durabench (engines/restate/README.md)
                raise _FieldError(f"services.{svc}", f"one of {list(EXTERNAL_SCHEMES)}", svc)
            schemes = EXTERNAL_SCHEMES[svc]
            if schemes and not ext.url.startswith(schemes):
                raise _FieldError(f"services.{svc}.url", f"a URL starting with {' or '.join(schemes)}", redact(ext.url))
            if redact(ext.url) != ext.url:
                raise _FieldError(f"services.{svc}.url", "a URL without a password (durabench writes endpoints into "
                                  "the run's worker configs; give PostgreSQL's password through PGPASSWORD or "
                                  "~/.pgpass)", redact(ext.url))
            if not schemes and ("://" in ext.url or ":" not in ext.url):
                raise _FieldError(f"services.{svc}.url", "HOST:PORT of the Temporal frontend", ext.url)
            for path, values in [("server_settings", self.server_settings)] + [
                    (f"variants.{i}.server_settings", v.server_settings) for i, v in enumerate(self.variants)]:
                if svc in values:
                    raise _FieldError(f"{path}.{svc}", f"no settings for an external server (services.{svc}): "
                                      "durabench does not configure servers it did not start", values[svc])
        seen: set[str] = set()
        for i, variant in enumerate(self.variants):
            if variant.name in seen:
                raise _FieldError(f"variants.{i}.name", "a name not used by another variant", variant.name)
            seen.add(variant.name)
            _check_server_settings(f"variants.{i}.server_settings", variant.server_settings)
            for name in variant.engine_settings:
                if name not in self.engines:
                    raise _FieldError(f"variants.{i}.engine_settings.{name}",
                                      f"one of the scenario's engines {self.engines}", name)
        return self

    def runs(self) -> list[tuple[str, str, VariantSpec | None]]:
        """(result name, engine, variant) of every engine run: one per engine, or one per engine and
        variant (``<engine>@<variant>``) when the scenario sweeps variants."""
        if not self.variants:
            return [(name, name, None) for name in self.engines]
        return [(f"{name}@{v.name}", name, v) for name in self.engines for v in self.variants]

    def server_settings_for(self, variant: VariantSpec | None) -> dict[str, dict[str, ServerValue]]:
        out = {svc: dict(values) for svc, values in self.server_settings.items()}
        for svc, values in (variant.server_settings if variant else {}).items():
            out.setdefault(svc, {}).update(values)
        return out

    def engine_settings_for(self, engine: str, variant: VariantSpec | None) -> dict[str, Any]:
        return {**self.engine_settings.get(engine, {}), **(variant.engine_settings.get(engine, {}) if variant else {})}

    @property
    def needs_proxy(self) -> bool:
        return any(f.kind in LINK_FAULTS and not f.container_target for f in self.faults)

    @property
    def total_load_s(self) -> float:
        return self.load.warmup + self.load.duration


class _FieldError(ValueError):
    def __init__(self, path: str, expected: str, given: Any) -> None:
        super().__init__(f"{path}: expected {expected}, given {given!r}")
        self.path, self.expected, self.given = path, expected, given


def _check_unique_engines(engines: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(engines):
        if name in seen:
            raise _FieldError(f"engines.{i}", f"each engine once (to run one several times: --repeat N); {name!r} "
                              f"is listed twice in {engines}", name)
        seen.add(name)


def _check_server_settings(path: str, settings: dict[str, dict[str, ServerValue]]) -> None:
    for svc in settings:
        if svc not in SETTABLE_SERVICES:
            raise _FieldError(f"{path}.{svc}", f"one of {list(SETTABLE_SERVICES)}", svc)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for error messages)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)
def workload_from_dump(dumped: dict[str, Any]) -> WorkloadSpec:
    """Re-validate ``manifest["scenario"]["workload"]`` (a dump carries computed and default fields)."""
    doc = dict(dumped)
    if doc.get("program"):
        for name in ("steps", "step_duration", "payload_bytes"):
            doc.pop(name, None)
        if not any(s.get("kind") == "call" for s in _walk_raw(doc["program"])):
            doc.pop("api", None)
    else:
        doc.pop("program", None)
        doc.pop("api", None)
    return WorkloadSpec.model_validate(doc)


def _walk_raw(stages: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for s in stages:
        yield s
        yield from _walk_raw(s.get("program") or [])


def program_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The compiled program of a run, from its manifest (results written before programs: a chain)."""
    return program.compile_workload(workload_from_dump(manifest["scenario"]["workload"]))


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
        elif key in ("durability", "deploy"):
            doc[key] = value
        elif key in ("duration", "rate", "generator"):
            doc["load"] = {**doc.get("load", {}), key: value}
        elif key == "workers":
            doc["workers"] = {**doc.get("workers", {}), "count": value}
        elif key in ("workers_daemon", "advertise"):
            doc["containers"] = {**doc.get("containers", {}), key: value}
        else:
            raise UserError(f"unknown override {key!r}")
    doc["overrides"] = applied
    try:
        return Scenario.model_validate(doc)
    except ValidationError as exc:
        raise ScenarioError(_describe_error(source, exc)) from None


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: construct_mapping below reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first.start_mark.line + 1}); "
                    "give each key once", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def read_text(path: Path, what: str = "scenario file") -> str:
    """The text of a UTF-8 file, or a UserError saying why it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScenarioError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                            f"a {what} is YAML text: save it as UTF-8") from None


def load(path: Path | str, overrides: dict[str, Any] | None = None) -> Scenario:
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a scenario file" if path.is_dir() else "no such scenario file"
        raise UserError(f"{path}: {what} (the shipped ones are in scenarios/)")
    text = read_text(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:" if mark is not None else ""
        raise ScenarioError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: YAML nested too deeply") from None
    sc = parse(data, str(path), overrides)
    sc._source_file = str(path)
    return sc
