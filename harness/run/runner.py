"""One run: for each engine in turn, provision, start workers, drive load, inject faults,
drain, reconcile, stop everything. Analysis and the report follow (harness/cli/run.py).

Engines run one after another on fresh servers (their own data directories), so no engine
inherits another's state or competes with it for the two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import dockerhost, integration, procs, program, registry, results
from harness.contract import (
    Engine,
    EngineContext,
    EngineRecord,
    event_consumer,
    event_consumer_settings,
    unsupported_stages,
)
from harness.errors import DurabenchError, RunInterrupted, ServiceError, UserError
from harness.ledger import Follower, Ledger
from harness.run import (
    appdb,
    containers,
    eventsource,
    floors,
    idle,
    image,
    pgstatements,
    resources,
    services,
    shipping,
    temporal_server,
)
from harness.run.driver import Driver, LiveView, Progress
from harness.run.flaky_api import FlakyApi
from harness.run.flaky_api import behaviour as flaky_behaviour
from harness.run.nemesis import Nemesis, resolve_service
from harness.run.proxy import Proxy
from harness.scenario import LINK_FAULTS, STORE_FAULTS, Scenario, VariantSpec
from harness.supervisor import Supervisor

LOOKUP_BATCH = 500
LOOKUP_RETRY_S = 60.0  # an engine's lookup that keeps raising for this long fails the engine run
SETTLE_TIMEOUT_S = 30.0
SETTLE_POLL_S = 0.2


def run(scenario: Scenario, out: Path, progress: bool = True) -> Path:
    """Run a scenario on every engine it names; returns the run directory."""
    return run_repeated(scenario, out, 1, progress)[1][0]


def run_repeated(scenario: Scenario, out: Path, repeat: int, progress: bool = True) -> tuple[Path, list[Path]]:
    """Run every engine ``repeat`` times, interleaved (A B A B ...: machine noise spreads evenly over
    the engines). Each repetition is an ordinary run directory; with ``repeat`` > 1 they sit in one
    directory of repeated runs (``<out>/<stamp>-<scenario>-x<N>/``, what ``report`` and ``compare``
    pool) and their manifests say ``repetition: {index, of}``. Returns (group directory, run
    directories); without repetitions the group directory is the run directory."""
    engines = validate(scenario)
    for name, engine in engines.items():
        reason = engine.unavailable_reason()
        if reason:
            raise UserError(f"engine {name!r} cannot run here: {reason}")
    if scenario.load.source == "kafka" and scenario.deploy != "containers":  # the image holds Java and the jars
        from harness.run import kafka

        reason = kafka.unavailable_reason()
        if reason:
            raise UserError(f"load.source: kafka cannot run here: {reason}")
    procs.reap_leftovers()
    group = out if repeat == 1 else results.new_run_dir(out, f"{scenario.name}-x{repeat}")
    run_dirs = []
    say = Progress(progress)
    deploy = _deployment(scenario, engines, say)
    workload = scenario.workload.to_workload(scenario.seed)
    for index in range(1, repeat + 1):  # repetition-major: every engine once, then every engine again
        run_dir = results.new_run_dir(group, scenario.name if repeat == 1 else f"{scenario.name}-rep{index}")
        run_dirs.append(run_dir)
        manifest = _manifest(scenario, run_dir, deploy)
        if repeat > 1:
            manifest["repetition"] = {"index": index, "of": repeat}
        results.write_json(run_dir / "manifest.json", manifest)
        rep = f" (repetition {index} of {repeat})" if repeat > 1 else ""
        for key, name, variant in scenario.runs():  # one per engine, or per engine and variant (<engine>@<variant>)
            engine = registry.load(name) if variant is not None or index > 1 else engines[name]
            skip = unsupported_stages(engine, workload)
            if skip:  # the program uses a stage kind this adapter does not run natively: skipped, never faked
                say.tick(functools.partial(str, f"[{key}] skipped: {skip}"), force=True)
                manifest["engines"][key] = {"description": engine.description, "skipped": skip, "error": None,
                                            "settings": {}, "services": {}}
                results.write_json(run_dir / "manifest.json", manifest)
                continue
            say.tick(functools.partial(str, f"[{key}] starting servers and workers{rep}"), force=True)
            info: dict[str, Any] = {}
            try:
                _run_engine(engine, key, scenario, run_dir, manifest["short_id"], say, name, variant, info,
                            deploy)
            except KeyboardInterrupt:  # Ctrl-C / SIGTERM: all is stopped; say which engine, keep what it wrote
                info["interrupted"] = True
                manifest["engines"][key] = info
                manifest["interrupted"] = {"engine": key, "at": results.now_iso()}
                results.write_json(run_dir / "manifest.json", manifest)
                raise RunInterrupted(run_dir, key) from None
            manifest["engines"][key] = info
            results.write_json(run_dir / "manifest.json", manifest)
    return (run_dirs[0] if repeat == 1 else group), run_dirs


def _manifest(scenario: Scenario, run_dir: Path, deploy: Deployment | None) -> dict[str, Any]:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "run_id": run_dir.name,
        "created_at": results.now_iso(),
        "scenario": scenario.model_dump(),
        "scenario_file": scenario.source_file,  # as given on the command line (a suite's index shows it)
        "durability": scenario.durability,
        "deploy": deploy.describe() if deploy else {"mode": "processes"},
        "seed": scenario.seed,
        "duration_draws": program.DRAW_RULE,  # every drawn duration: a function of (seed, workflow, step)
        "short_id": uuid.uuid4().hex[:8],  # short: it goes into queue names, database names and socket paths
        "harness": {"version": _version(), "git_revision": results.git_revision(), "python": sys.version.split()[0]},
        "machine": results.machine_facts(),
        "engines": {},
    }


def validate(scenario: Scenario) -> dict[str, Engine]:
    """Checks that need the engines: names, the services fault targets refer to, container stacks."""
    registry.check_names(scenario.engines)
    for variant in [None, *scenario.variants]:
        temporal_server.check_settings(scenario.server_settings_for(variant).get(temporal_server.NAME, {}),
                                       dynamic_check=True)
    engines = {name: registry.load(name) for name in scenario.engines}
    workload = scenario.workload.to_workload(scenario.seed)
    events = scenario.load.source == "kafka"
    if events and scenario.containers.workers_daemon:
        raise UserError("load.source: kafka with containers.workers_daemon: the broker advertises its service name on "
                        "the stack's network, which worker containers on another daemon do not reach; run it without "
                        "workers_daemon")
    for name, engine in engines.items():
        if events and event_consumer(engine) is None:
            raise UserError(f"engine {name!r} does not consume events (load.source: kafka needs an adapter with an "
                            f"event consumer: {', '.join(_event_engines()) or 'none installed'}); remove it from "
                            "engines")
        registry.check_settings(engine, scenario.engine_settings.get(name, {}), workload, scenario.workers.count,
                                f"engine_settings.{name}")
        for i, variant in enumerate(scenario.variants):
            registry.check_settings(engine, variant.engine_settings.get(name, {}), workload, scenario.workers.count,
                                    f"variants.{i}.engine_settings.{name}")
        for i, fault in enumerate(scenario.faults):
            if fault.kind in STORE_FAULTS + LINK_FAULTS and not fault.resolved_target.startswith("worker:"):
                svc = resolve_service(fault.resolved_target, (*engine.services, *(("kafka",) if events else ())),
                                      name)
                if fault.kind in STORE_FAULTS and svc in scenario.services:
                    raise UserError(
                        f"faults.{i} ({fault.kind} {fault.resolved_target}) needs process control of {svc}, but "
                        f"engine {name!r} uses the external server services.{svc}: durabench cannot restart it; "
                        f"remove the fault, or remove services.{svc} so durabench starts {svc} itself")
        if scenario.deploy == "containers":
            containers.load_stack(name, {"DURABENCH_WORK_DIR": "/"})
            ctx = EngineContext(name, "check", {}, workload, 1, {}, Path("/"), Path("/"))
            argv = containers.container_argv(engine.worker_command(ctx, 0))
            if scenario.containers.workers_daemon and argv[0] != containers.CONTAINER_PYTHON:
                raise UserError(f"engine {name!r}: containers.workers_daemon runs Python workers only (durabench "
                                f"worker in the container starts them); {argv[0]} is not one: run it without "
                                "workers_daemon")
    if scenario.deploy == "containers" and scenario.services:
        raise UserError(f"deploy: containers starts every server of a stack itself; external services "
                        f"({', '.join(scenario.services)}) need deploy: processes")
    if scenario.deploy == "containers" and scenario.load.generator == "locust":
        containers.load_front({"DURABENCH_WORK_DIR": "/"})
        if scenario.load.locust_remote_workers:
            raise UserError("deploy: containers runs every Locust worker in the stack; load.locust_remote_workers "
                            "needs deploy: processes")
    if scenario.deploy == "containers" and scenario.workers.ledger == "shipped":
        raise UserError("deploy: containers writes worker ledgers through a bind mount; workers.ledger: shipped "
                        "needs deploy: processes")
    return engines


def _event_engines() -> list[str]:
    """The installed engines that consume events."""
    out = []
    for name in registry.names():
        try:
            engine = registry.load(name)
        except Exception:  # an adapter that does not import here is not a candidate
            continue
        if event_consumer(engine) is not None:
            out.append(name)
    return out


@dataclass
class Deployment:
    """deploy: containers: the daemon and the runtime image every engine's stack runs, and the workers'
    daemon when the worker containers run on another one (multi-host)."""

    client: Any
    image: str
    workers: containers.WorkersDaemon | None = None

    def describe(self) -> dict[str, Any]:
        out = {"mode": "containers", "image": image.describe(self.client, self.image),
               "daemon": containers.daemon_facts(self.client)}
        if self.workers is not None:  # the servers' ports and the collector are published on advertise too
            out.update(workers_daemon=self.workers.describe(), advertise=self.workers.advertise)
        return out


def _deployment(scenario: Scenario, engines: dict[str, Engine], say: Progress) -> Deployment | None:
    if scenario.deploy != "containers":
        return None
    client = dockerhost.connect()
    dockerhost.require_local(dockerhost.facts(client))
    procs.REGISTRY.add_docker_owner()  # the reaper removes this process's containers if it dies

    def tick(line: str) -> None:
        say.tick(functools.partial(str, line), force=True)

    tag = image.ensure(client, tick)
    spec = scenario.containers
    if spec.workers_daemon is None or spec.advertise is None:
        return Deployment(client, tag)
    workers = containers.workers_daemon(spec.workers_daemon, spec.advertise)
    dockerhost.remove_owned(workers.client, dead_only=True)  # leftovers of dead durabench processes there
    procs.REGISTRY.add_docker_owner(spec.workers_daemon)  # and the reaper cleans that daemon too
    workers.image_transfer = containers.transfer_image(client, workers.client, tag, tick)
    return Deployment(client, tag, workers)


def _version() -> str:
    from harness import __version__

    return __version__


def _run_engine(engine: Engine, name: str, scenario: Scenario, run_dir: Path, run_id: str,
                say: Progress, engine_name: str | None = None, variant: VariantSpec | None = None,
                info: dict[str, Any] | None = None, deploy: Deployment | None = None) -> dict[str, Any]:
    """One engine run; ``name`` names its results (``<engine>@<variant>`` in a sweep), ``engine_name``
    is the registered engine (the adapter sees it as ``ctx.engine``). Fills and returns ``info`` (the
    manifest entry), which holds what is known so far when a KeyboardInterrupt passes through."""
    engine_name = engine_name or name
    edir = results.engine_dir(run_dir, name)
    ledger_dir = edir / "history"
    ledger_dir.mkdir(parents=True)
    (edir / "logs").mkdir()
    workload = scenario.workload.to_workload(scenario.seed)
    settings = {**engine.default_settings(workload, scenario.workers.count),
                **scenario.engine_settings_for(engine_name, variant)}
    info = {} if info is None else info
    info.update({
        "description": engine.description,
        "versions": engine.versions(),
        "settings": settings,
        "recovery_settings": list(getattr(engine, "recovery_settings", ())),  # optional (docs/engines.md)
        "services": {},
        "error": None,
    })
    if variant is not None:
        info["variant"] = variant.model_dump()
    if scenario.load.generator == "locust":
        from harness.run import locustload

        info["versions"].update(locustload.versions())
    started = time.monotonic()
    kinds = workload.kinds()
    needed = list(engine.services)
    if "effect" in kinds and "postgres" not in needed:  # the application database's server
        needed.append("postgres")
        info["app_db_service_added"] = True
    if scenario.load.source == "kafka" and "kafka" not in needed:  # the event broker (harness/run/eventsource.py)
        needed.append("kafka")
    try:
        # workers, the driver and dependent servers (temporal-server -> postgres) reach each server
        # through its fault proxy when the scenario has link faults
        with _servers(engine, engine_name, scenario, variant, deploy, run_id, edir, needed) as (svc, stack), \
                _flaky_api(scenario, kinds, edir, ledger_dir) as api:
            proxies = svc.proxies
            info["services"] = svc.describe()
            endpoints = svc.endpoints
            if api is not None:
                endpoints["flaky_api"] = api.url
                info["services"]["flaky_api"] = api.describe()
            if "effect" in kinds:
                endpoints["app_db"] = appdb.create(endpoints["postgres"], svc.services["postgres"].url)
                info["services"]["app_db"] = {"url": services.redact(endpoints["app_db"]),
                                              "version": "application database",
                                              "settings": {"table": appdb.EFFECTS_TABLE}}
            spec = None
            if scenario.load.source == "kafka":
                spec = eventsource.spec_for(endpoints["kafka"], run_id, name, scenario.load.partitions)
                eventsource.create_topic(spec)
                info["events"] = eventsource.describe(spec, svc.services["kafka"].settings)
                if stack is not None:  # the worker containers' consumers: the listener of the stack's network
                    info["events"]["consumer_bootstrap"] = stack.services.inner_endpoints["kafka"]
                info["events"]["consumer"] = event_consumer(engine)
                info["events"]["consumer_settings"] = event_consumer_settings(engine)
            ctx = EngineContext(engine_name, run_id, endpoints, workload, scenario.workers.count, settings, edir,
                                ledger_dir, spec)
            try:
                with _library_logs(edir / "logs" / "driver.log"):
                    engine.prepare(ctx)
                    # integration cost: workflow code, services and their idle cost, defaults changed
                    # (harness/integration.py, harness/run/idle.py)
                    settle_s = (max(0.0, idle.SETTLE_S - (time.monotonic() - started))
                                if scenario.resources.idle else 0.0)
                    info["integration"] = {**integration.describe(engine, settings),
                                           "services_idle": idle.measure(svc, scenario.resources.idle, settle_s)}
                    asyncio.run(_drive(engine, ctx, scenario, say, svc, proxies, stack))
            finally:
                if "effect" in kinds:  # the checker counts effects from the table itself
                    appdb.dump(svc.services["postgres"].url, edir / appdb.EFFECTS_FILE)
    except (TimeoutError, DurabenchError, OSError, RuntimeError) as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
        (edir / "logs" / "harness-error.log").write_text(traceback.format_exc())
        say.tick(lambda: f"[{name}] FAILED: {info['error']}", force=True)
    finally:
        info["wall_s"] = round(time.monotonic() - started, 3)
    return info


@contextlib.contextmanager
def _servers(engine: Engine, engine_name: str, scenario: Scenario, variant: VariantSpec | None,
             deploy: Deployment | None, run_id: str, edir: Path,
             names: list[str] | None = None) -> Iterator[tuple[Any, containers.Stack | None]]:
    """The engine's servers: child processes (or the user's external ones) reached through their fault
    proxies when the scenario has link faults, or the containers of its stack (then the stack too)."""
    settings = scenario.server_settings_for(variant)
    if deploy is None:
        with services.running(names or list(engine.services), edir / "logs", scenario.durability, settings,
                              {k: v.url for k, v in scenario.services.items()},
                              proxied=scenario.needs_proxy) as svc:
            yield svc, None
        return
    with containers.running(deploy.client, deploy.image, engine_name, tuple(names or engine.services), run_id, edir,
                            scenario.durability, settings, scenario.workers.count,
                            proxied=scenario.needs_proxy, workers_daemon=deploy.workers) as stack:
        yield stack.services, stack


LIBRARY_LOGGERS = ("dbos", "temporalio", "celery", "kombu")


@contextlib.contextmanager
def _library_logs(path: Path) -> Iterator[None]:
    """Engine libraries used in this process (the adapter's prepare and its client) log to the engine's
    logs/driver.log, never to the terminal, where they would interleave with durabench's own lines (e.g.
    DBOSClient's retries during a store crash). DBOS adds its console handler only to a logger without
    handlers, so the named libraries get the file handler directly; every other logger reaches it through
    the root logger (no stream handler, and logging's last-resort stderr handler is never used), and Python
    warnings go there too. Durabench's own lines are printed, not logged. Native code that writes to the
    terminal itself is the adapter's to route (engines/temporal_common.py forwards Temporal's Rust core
    logs to the ``temporalio`` logger)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = {}
    for name in ("", *LIBRARY_LOGGERS):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers, logger.propagate = [handler], name == ""
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


@contextlib.contextmanager
def _flaky_api(scenario: Scenario, kinds: set[str], edir: Path, ledger_dir: Path) -> Iterator[FlakyApi | None]:
    """The flaky API of this engine run, when the program has a call stage."""
    if "call" not in kinds:
        yield None
        return
    api = FlakyApi(flaky_behaviour(scenario.workload.api, scenario.seed), edir, ledger_dir)
    api.start()
    try:
        yield api
    finally:
        api.stop()


async def _drive(engine: Engine, ctx: EngineContext, scenario: Scenario, say: Progress,
                 svc: Any, proxies: dict[str, Proxy], containers_stack: containers.Stack | None = None) -> None:
    harness_ledger = Ledger(ctx.ledger_dir, "driver")
    sup_ledger = Ledger(ctx.ledger_dir, "supervisor")
    nem_ledger = Ledger(ctx.ledger_dir, "nemesis")
    view = LiveView(ctx.workload.steps, Follower(ctx.ledger_dir))
    with contextlib.ExitStack() as stack:
        if scenario.workers.ledger == "shipped":  # every worker a "host": its ledger comes over HTTP
            local = scenario.workers.count - scenario.workers.remote  # the rest run on other hosts
            coll = stack.enter_context(shipping.collector(ctx.ledger_dir, ctx.work_dir / "logs" / "collector.log",
                                                          ctx.work_dir / "workers", scenario.workers.collector_host))
            sup: Supervisor = shipping.ShippingSupervisor(engine, ctx, local, scenario.workers.restart_delay,
                                                          sup_ledger, collector_url=coll.url)
            remote = list(range(local, scenario.workers.count))
            for i in remote:
                sup.config(i).dump(sup.config_path(i))
                say.tick(functools.partial(str, f"[{ctx.work_dir.name}] waiting for worker:{i} on its host: "
                                                 f"durabench worker --run {coll.url} --index {i}"), force=True)
            await _drive_with(engine, ctx, scenario, say, svc, proxies, sup, view, harness_ledger, nem_ledger)
            missing = await asyncio.to_thread(coll.finish_remote, remote)
            if missing:
                raise ServiceError(f"remote workers {missing} did not confirm their last shipment: their history may "
                                   "be incomplete (restart durabench worker with the same --spool to resume)")
        elif containers_stack is not None:  # deploy: containers
            if containers_stack.workers is not None:  # on another daemon: their ledgers come over HTTP
                coll = stack.enter_context(shipping.collector(
                    ctx.ledger_dir, ctx.work_dir / "logs" / "collector.log", ctx.work_dir / "workers",
                    containers_stack.workers.advertise))
                containers_stack.collector_url = coll.url
            in_containers = containers.ContainerSupervisor(engine, ctx, scenario.workers.count,
                                                           scenario.workers.restart_delay, sup_ledger, containers_stack)
            await _drive_with(engine, ctx, scenario, say, svc, proxies, in_containers, view, harness_ledger,
                              nem_ledger, containers_stack)
        else:
            sup = Supervisor(engine, ctx, scenario.workers.count, scenario.workers.restart_delay, sup_ledger)
            await _drive_with(engine, ctx, scenario, say, svc, proxies, sup, view, harness_ledger, nem_ledger)


async def _drive_with(engine: Engine, ctx: EngineContext, scenario: Scenario, say: Progress, svc: Any,
                      proxies: dict[str, Proxy], sup: Supervisor, view: LiveView,
                      harness_ledger: Ledger, nem_ledger: Ledger, stack: containers.Stack | None = None) -> None:
    # -- cost and floors (harness/run/resources.py, harness/run/floors.py): sampler from here to the end
    sampler = None
    if scenario.resources.interval > 0:
        sampler = resources.for_run(ctx.work_dir, svc, sup, scenario.resources.interval, scenario.resources.pss)
        sampler.start()
    if scenario.floors.enabled:  # store floors: servers up, workers not started yet; never raises
        say.tick(lambda: f"[{ctx.work_dir.name}] measuring floors", force=True)
        await asyncio.to_thread(floors.measure_stores, svc, ctx.endpoints, ctx.settings, ctx.workers,
                                scenario.floors, ctx.work_dir)
    # -- end cost and floors
    follow = asyncio.create_task(view.follow())
    sup.start()
    try:
        await _wait_ready(view, sup, scenario.workers.ready_timeout)
        client = await engine.open_client(ctx)
        lag = None
        if ctx.events is not None:  # the driver produces events; the consumer group's lag is sampled
            client = eventsource.EventClient(engine, ctx.events, client, harness_ledger)
            lag = eventsource.LagSampler(ctx.events, ctx.work_dir)
            lag.start()
        try:
            # the unloaded workflow floor: chains of work only (a program's waits need the driver's signals)
            if scenario.floors.enabled and scenario.floors.workflow_duration > 0 and ctx.workload.kinds() == {"work"}:
                await floors.unloaded_workflows(ctx, client, view, scenario.floors, scenario.load.submit_timeout,
                                                scenario.seed, _lookup)
            stages = {st["step"]: st for st in program.walk(ctx.workload.program)}
            if scenario.load.generator == "locust":  # Locust processes through HTTP front doors
                from harness.run.locustload import LocustLoad

                driver: Driver = LocustLoad(ctx, client, scenario.load, scenario.seed, harness_ledger, view, stack)
                driver.stages = stages  # signals still go from here, through the engine client
            else:
                driver = Driver(ctx.engine, client, scenario.load, scenario.seed, harness_ledger, view, ctx.run_id,
                                stages)
            signals = asyncio.create_task(driver.signals())
            nemesis = Nemesis(list(scenario.faults), sup, nem_ledger, view, svc, proxies, ctx.engine,
                              scenario.total_load_s, stack)
            statements = pgstatements.probe_for(svc)  # pg_stat_statements windows (harness/run/pgstatements.py)
            if scenario.resources.baseline > 0:  # the per-second part of store costs: workers up, no workflow
                say.tick(lambda: f"[{ctx.work_dir.name}] measuring {scenario.resources.baseline:g}s idle", force=True)
                await _idle_window(scenario.resources.baseline, harness_ledger, sampler, statements)
            if statements is not None:
                await asyncio.to_thread(statements.open, "load")
            if sampler is not None:
                sampler.sample()  # the cost interval starts here (harness/analysis/cost.py)
            load = asyncio.create_task(driver.run())
            started = asyncio.create_task(driver.started.wait())
            await asyncio.wait([load, started], return_when=asyncio.FIRST_COMPLETED)
            if not driver.started.is_set():  # the load failed before it began (e.g. a front door did not start)
                started.cancel()
                await load  # raises why
                raise ServiceError("the load ended before it started")
            faults = asyncio.create_task(nemesis.run(driver.t0_mono))
            while not load.done():
                say.tick(lambda: driver.progress_line("load"))
                await asyncio.sleep(0.1)
            await load
            nemesis.final_heal()
            drained = await driver.drain(scenario.load.drain_timeout,
                                         lambda: say.tick(lambda: driver.progress_line("drain")),
                                         scenario.load.drain_quiet)
            drained_at = time.monotonic()
            say.tick(lambda: driver.progress_line("drained" if drained else "timeout"), force=True)
            await nemesis.settle()
            faults.cancel()
            driver.signals_stopped.set()
            await asyncio.gather(faults, return_exceptions=True)
            if statements is not None:  # before the reconcile's own queries
                await asyncio.to_thread(statements.close, "load")
                statements.save(ctx.work_dir)
            await signals
            ids = driver.submitted_ids()
            records = await _lookup(client, ids, set(view.completed))
            results.save_reconcile(ctx.work_dir / "reconcile.json", records)
            if sampler is not None:  # let PostgreSQL flush its statistics before the last sample
                await asyncio.sleep(max(0.0, resources.STATS_FLUSH_S - (time.monotonic() - drained_at)))
        finally:
            if lag is not None:
                await asyncio.to_thread(lag.stop)
            await client.close()
    finally:
        follow.cancel()
        if sampler is not None:
            sampler.stop()  # the last sample, with the workers still up
        sup.stop()
        if isinstance(sup, shipping.ShippingSupervisor) and not sup.sweep():
            raise ServiceError(f"the ledger collector did not take every shipped record; see {ctx.work_dir / 'hosts'}")


async def _idle_window(idle_s: float, ledger: Ledger, sampler: resources.Sampler | None,
                       statements: pgstatements.StatementProbe | None) -> None:
    """``idle_s`` seconds with the workers up and nothing submitted, between ``idle_start`` and
    ``idle_end`` records (harness/analysis/cost.py takes the per-second store costs from it)."""
    if statements is not None:
        # transaction counters of the setup's last bursts (floors, shard acquisition) reach
        # pg_stat_database up to 10 s late: let them land before the idle window opens
        await asyncio.sleep(pgstatements.SETTLE_S)
        await asyncio.to_thread(statements.open, "idle")
    if sampler is not None:
        sampler.sample()
    ledger.write("idle_start")
    await asyncio.sleep(idle_s)
    ledger.write("idle_end")
    if sampler is not None:
        sampler.sample()
    if statements is not None:
        await asyncio.to_thread(statements.close, "idle")


async def _wait_ready(view: LiveView, sup: Supervisor, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    wanted = {f"worker:{i}" for i in range(sup.ctx.workers)}  # remote workers too (workers.remote)
    while not wanted <= view.ready.keys():
        if time.monotonic() > deadline:
            missing = sorted(wanted - view.ready.keys())
            raise ServiceError(f"workers {missing} not ready after {timeout_s:g}s; see {sup.log_path(0).parent}")
        view.poll()
        await asyncio.sleep(0.02)


async def _lookup(client: Any, ids: list[str], ledger_done: set[str]) -> dict[str, EngineRecord]:
    """Ask the engine about every id. A workflow whose last step ended may not be recorded complete
    by the engine yet (the engine's own bookkeeping follows the step): ask again for those, for up to
    SETTLE_TIMEOUT_S, so completion times come from the engine rather than the ledger."""
    out: dict[str, EngineRecord] = {}
    for i in range(0, len(ids), LOOKUP_BATCH):
        out.update(await _lookup_batch(client, ids[i : i + LOOKUP_BATCH]))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        waiting = [wf for wf in ids if wf in ledger_done and out[wf].status == "pending"]
        if not waiting:
            break
        await asyncio.sleep(SETTLE_POLL_S)
        for i in range(0, len(waiting), LOOKUP_BATCH):
            out.update(await _lookup_batch(client, waiting[i : i + LOOKUP_BATCH]))
    return out


async def _lookup_batch(client: Any, ids: list[str]) -> dict[str, EngineRecord]:
    """One batch of the engine's lookup, asked again while it raises (an overloaded or restarting
    server: "shard status unknown" from Temporal) for up to LOOKUP_RETRY_S; then the engine run fails
    with what the engine's client said, not a traceback."""
    deadline = time.monotonic() + LOOKUP_RETRY_S
    pause_s = SETTLE_POLL_S
    while True:
        try:
            return dict(await client.lookup(ids))
        except Exception as exc:  # the engine's client library's own errors, whatever their class
            if time.monotonic() + pause_s > deadline:
                raise ServiceError(f"the engine's lookup of {len(ids)} workflows still failed after "
                                   f"{LOOKUP_RETRY_S:g}s: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, 5.0)
