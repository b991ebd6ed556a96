"""``durabench saturate SCENARIO``: the maximum sustainable throughput of each engine on this machine.

As OpenMessaging Benchmark does, the offered rate steps up until the engine no longer keeps up.
Each step is a complete, ordinary run (``harness.cli.run.run_and_analyze``: fresh servers, workers, open-loop
load, drain, analysis) of the scenario's workload for one engine at one rate, with the scenario's
faults and floors left out; its run directory sits under the saturate directory and can be
analyzed, reported and compared like any other.

Rates: ``start_rate``, then x ``factor`` per step, up to ``max_rate``. A step is **sustained** when

- the engine ran (no error) and lost nothing,
- completions per second in the measured window >= ``min_throughput_ratio`` (0.95) x the offered rate,
- the end-to-end p99 <= ``p99_target``,
- the driver kept its offered rate (else the harness, not the engine, was the limit: the search
  stops and says so).

The search stops at the first step that is not sustained; ``refine`` extra steps then bisect
(geometrically) between the last sustained and the first failed rate. The **maximum sustainable
throughput** is the completions/s of the highest sustained step, reported with its offered rate
and its p50 / p99. With ``repetitions`` > 1 the whole search runs again (engines interleaved) and
the report gives min / median / max over repetitions.

Output: ``<out>/<UTC timestamp>-saturate-<scenario>/`` with ``saturate.json`` (every step of every
repetition, and the aggregate), ``saturate.md`` (the table) and ``runs/`` (one run per step).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import results, scenario
from harness.errors import UserError
from harness.scenario import SaturateSpec, Scenario

SATURATE_JSON = "saturate.json"
SATURATE_MD = "saturate.md"
MIN_DRAIN_S = 10.0


@dataclass
class Step:
    rate: float
    sustained: bool
    reason: str  # why not sustained ("" when sustained)
    throughput_per_s: float | None = None
    achieved_rate_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    run_dir: str | None = None
    harness_limited: bool = False


@dataclass
class Search:
    engine: str
    repetition: int
    steps: list[Step] = field(default_factory=list)
    finished: bool = False

    @property
    def best(self) -> Step | None:
        sustained = [s for s in self.steps if s.sustained]
        return max(sustained, key=lambda s: s.rate) if sustained else None

    @property
    def stopped_by(self) -> str:
        if not self.finished:
            return "(running)"
        failed = [s for s in self.steps if not s.sustained]
        if not failed:
            return "max_rate reached"
        first = min(failed, key=lambda s: s.rate)
        return f"{first.reason} at {first.rate:g}/s"


def ladder(start: float, factor: float, max_rate: float) -> list[float]:
    """start, start x factor, ... up to max_rate (included; rates rounded to 3 significant digits)."""
    rates, rate = [], start
    while rate <= max_rate * 1.0001:
        rates.append(_round_rate(rate))
        rate *= factor
    return rates


def _round_rate(rate: float) -> float:
    digits = 2 - math.floor(math.log10(abs(rate))) if rate > 0 else 0
    return round(rate, max(0, digits))


def judge(rate: float, engine: dict[str, Any], cfg: SaturateSpec) -> Step:
    """Whether one step's engine summary shows a sustained rate."""
    lat = engine.get("e2e_latency_ms") or {}
    step = Step(rate, False, "", engine.get("throughput_per_s"), engine.get("achieved_rate_per_s"),
                lat.get("p50"), lat.get("p99"))
    target_ms = cfg.p99_target * 1000
    if engine.get("status") != "ok" or step.throughput_per_s is None:
        step.reason = f"error: {engine.get('error') or 'no figures'}"
    elif engine.get("driver_fell_behind"):
        step.reason, step.harness_limited = "the driver fell behind its offered rate (harness limit)", True
    elif engine.get("lost"):
        step.reason = f"{engine['lost']} workflows lost"
    elif step.throughput_per_s < cfg.min_throughput_ratio * rate:
        step.reason = f"throughput {step.throughput_per_s:g}/s < {cfg.min_throughput_ratio:g} x offered"
    elif step.p99_ms is None or step.p99_ms > target_ms:
        step.reason = f"p99 {step.p99_ms} ms > target {target_ms:g} ms"
    else:
        step.sustained = True
    return step


RunStep = Callable[[str, float, int], tuple[dict[str, Any], str | None]]


def search(engine: str, repetition: int, cfg: SaturateSpec, run_step: RunStep, refine: int = 0,
           on_step: Callable[[Search, Step], None] | None = None, out: Search | None = None) -> Search:
    """Step the rate up for one engine until it is not sustained; then bisect ``refine`` times.
    Steps are appended to ``out`` (a new Search by default) as they finish."""
    out = out if out is not None else Search(engine, repetition)

    def attempt(rate: float) -> Step:
        summary, run_dir = run_step(engine, rate, repetition)
        step = judge(rate, summary, cfg)
        step.run_dir = run_dir
        out.steps.append(step)
        if on_step is not None:
            on_step(out, step)
        return step

    failed: Step | None = None
    for rate in ladder(cfg.start_rate, cfg.factor, cfg.max_rate):
        step = attempt(rate)
        if not step.sustained:
            failed = step
            break
    if failed is not None and not failed.harness_limited:
        low = out.best.rate if out.best else None
        high = failed.rate
        for _ in range(refine):
            if low is None:
                break
            mid = _round_rate(math.sqrt(low * high))
            if mid in (low, high):
                break
            if attempt(mid).sustained:
                low = mid
            else:
                high = mid
    out.finished = True
    return out


def _spread(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"min": None, "median": None, "max": None}
    return {"min": min(vals), "median": round(statistics.median(vals), 3), "max": max(vals)}


def aggregate(searches: list[Search]) -> dict[str, Any]:
    """Per engine: min / median / max over repetitions of the maximum sustainable throughput."""
    out: dict[str, Any] = {}
    for engine in dict.fromkeys(s.engine for s in searches):
        mine = [s for s in searches if s.engine == engine]
        bests = [s.best for s in mine]
        out[engine] = {
            "repetitions": len(mine),
            "max_sustainable_throughput_per_s": _spread([b.throughput_per_s if b else None for b in bests]),
            "max_sustained_rate_per_s": _spread([b.rate if b else None for b in bests]),
            "p50_ms_at_max": _spread([b.p50_ms if b else None for b in bests]),
            "p99_ms_at_max": _spread([b.p99_ms if b else None for b in bests]),
            "stopped_by": [s.stopped_by for s in mine],
            "below_start_rate": sum(1 for b in bests if b is None),  # repetitions that sustained no rate at all
            "harness_limited": any(st.harness_limited for s in mine for st in s.steps),
        }
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def _cell(s: dict[str, float | None]) -> str:
    if s["median"] is None:
        return "-"
    if s["min"] == s["max"]:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} [{_fmt(s['min'])}-{_fmt(s['max'])}]"


def markdown(doc: dict[str, Any]) -> str:
    cfg = doc["settings"]
    lines = [
        f"# durabench saturate: {doc['scenario']}",
        "",
        f"Maximum sustainable throughput per engine on this machine ({doc['machine']['cpus']} CPUs, "
        f"{doc['machine']['cpu_model']}), durability **{doc['durability']}**: offered rate from "
        f"{cfg['start_rate']:g}/s x {cfg['factor']:g} per step up to {cfg['max_rate']:g}/s, each step "
        f"{cfg['warmup']:g} s warmup + {cfg['step_duration']:g} s measured; a step is sustained when completions/s "
        f">= {cfg['min_throughput_ratio']:g} x offered, the end-to-end p99 <= {cfg['p99_target'] * 1000:g} ms and "
        f"nothing is lost. Values: median [min-max] over {doc['repetitions']} repetition(s).",
        "",
        "| engine | max sustainable wf/s | at offered /s | p50 ms | p99 ms | stopped by |",
        "|---|---|---|---|---|---|",
    ]
    for engine, a in doc["engines"].items():
        flag = " (harness limit)" if a["harness_limited"] else ""
        if a.get("below_start_rate"):
            flag += f" ({a['below_start_rate']} of {a['repetitions']} sustained not even the start rate)"
        lines.append(f"| {engine} | {_cell(a['max_sustainable_throughput_per_s'])} | "
                     f"{_cell(a['max_sustained_rate_per_s'])} | {_cell(a['p50_ms_at_max'])} | "
                     f"{_cell(a['p99_ms_at_max'])} | {'; '.join(a['stopped_by'])}{flag} |")
    lines += ["", "## Steps", "", "| engine | rep | offered /s | completed /s | p50 ms | p99 ms | sustained | run |",
              "|---|---|---|---|---|---|---|---|"]
    for s in doc["searches"]:
        for st in sorted(s["steps"], key=lambda st: st["rate"]):
            ok = "yes" if st["sustained"] else f"no: {st['reason']}"
            run = Path(st["run_dir"]).name if st["run_dir"] else "-"
            lines.append(f"| {s['engine']} | {s['repetition']} | {st['rate']:g} | {_fmt(st['throughput_per_s'])} | "
                         f"{_fmt(st['p50_ms'])} | {_fmt(st['p99_ms'])} | {ok} | {run} |")
    lines += ["", "Each step is an ordinary run under `runs/` (no faults, no floors): `durabench analyze` and "
              "`durabench report` read it. The workload and the servers are the scenario's; on a shared 2-core "
              "machine the servers, workers and driver compete for the same cores, so the figures are this "
              "machine's, not the engines' in general.", ""]
    return "\n".join(lines)


def step_scenario(sc: Scenario, key: str, rate: float, repetition: int, cfg: SaturateSpec) -> Scenario:
    """The scenario of one step: one engine (or engine@variant), one rate, no faults, no floors."""
    name, _, variant = key.partition("@")
    doc = sc.model_dump()
    doc.update(
        name=f"{sc.name}-{key.replace('@', '_')}-r{repetition}-{rate:g}",
        engines=[name],
        faults=[],
        variants=[{**v, "engine_settings": {k: x for k, x in v["engine_settings"].items() if k == name}}
                  for v in doc["variants"] if v["name"] == variant] if variant else [],
        floors={**doc["floors"], "enabled": False},
        load={**doc["load"], "mode": "open", "rate": rate, "warmup": cfg.warmup, "duration": cfg.step_duration,
              "drain_timeout": max(MIN_DRAIN_S, 2 * cfg.p99_target)},
        overrides={**sc.overrides, "saturate_step": {"rate": rate, "repetition": repetition}},
    )
    doc["engine_settings"] = {k: v for k, v in doc["engine_settings"].items() if k == name}
    step = Scenario.model_validate(doc)
    step._source_file = sc.source_file  # each step's manifest names the file the search came from
    return step


def saturate(sc: Scenario, cfg: SaturateSpec, out: Path, refine: int = 0, progress: bool = True,
             run: Callable[[Scenario, Path], Path] | None = None) -> Path:
    """Run the search for every engine of the scenario; returns the saturate directory."""
    if run is None:
        from harness.cli.run import run_and_analyze
        from harness.run import runner

        runner.validate(sc)

        def run(step_sc: Scenario, runs_dir: Path) -> Path:
            return run_and_analyze(step_sc, runs_dir, progress=progress)

    parent = results.new_run_dir(out, f"saturate-{sc.name}")
    runs_dir = parent / "runs"
    keys = [key for key, _, _ in sc.runs()]

    def run_step(key: str, rate: float, repetition: int) -> tuple[dict[str, Any], str | None]:
        if progress:
            print(f"[saturate] {key} repetition {repetition}: {rate:g} workflows/s", file=sys.stderr, flush=True)
        run_dir = run(step_scenario(sc, key, rate, repetition, cfg), runs_dir)
        summary = results.read_json(run_dir / "summary.json")
        engine = next(iter(summary["engines"].values()), {"status": "error", "error": "no engine in the run"})
        return engine, str(run_dir)

    searches: list[Search] = []
    doc: dict[str, Any] = {
        "schema_version": results.SCHEMA_VERSION,
        "scenario": sc.name,
        "durability": sc.durability,
        "created_at": results.now_iso(),
        "machine": results.machine_facts(),
        "harness": {"git_revision": results.git_revision()},
        "settings": {**cfg.model_dump(), "refine": refine},
        "workload": sc.workload.model_dump(),
        "workers": sc.workers.count,
        "repetitions": cfg.repetitions,
        "engines": {},
        "searches": [],
    }

    def save(*_: Any) -> None:  # after every step: a partial result survives an interrupted search
        doc["engines"] = aggregate(searches)
        doc["searches"] = [{"engine": s.engine, "repetition": s.repetition, "best": asdict(s.best) if s.best else None,
                            "stopped_by": s.stopped_by, "steps": [asdict(st) for st in s.steps]} for s in searches]
        results.write_json(parent / SATURATE_JSON, doc)
        (parent / SATURATE_MD).write_text(markdown(doc))

    for repetition in range(1, cfg.repetitions + 1):
        for key in keys:
            current = Search(key, repetition)
            searches.append(current)
            search(key, repetition, cfg, run_step, refine, save, current)
            save()
    return parent


# ------------------------------------------------------------------ command line

def cmd_saturate(args: argparse.Namespace) -> int:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None
    if args.engines is not None and not engines:
        raise UserError("--engines is empty; give a comma-separated list such as dbos,temporal")
    sc = scenario.load(args.scenario, {"engines": engines, "workers": args.workers, "durability": args.durability})
    updates: dict[str, Any] = {}
    for flag, key in (("start_rate", "start_rate"), ("factor", "factor"), ("max_rate", "max_rate"),
                      ("repetitions", "repetitions"), ("step_duration", "step_duration"), ("warmup", "warmup")):
        if getattr(args, flag) is not None:
            updates[key] = getattr(args, flag)
    if args.p99_target_ms is not None:
        updates["p99_target"] = args.p99_target_ms / 1000
    try:
        cfg = SaturateSpec.model_validate({**sc.saturate.model_dump(), **updates})
    except ValueError as exc:
        raise UserError(f"bad saturate setting: {str(exc).splitlines()[-1].strip()}") from None
    if cfg.start_rate > cfg.max_rate:
        raise UserError(f"--start-rate {cfg.start_rate:g} is above --max-rate {cfg.max_rate:g}")
    if args.refine < 0:
        raise UserError(f"--refine {args.refine}: expected a number of bisection steps >= 0")
    results.check_out_dir(Path(args.out))
    parent = saturate(sc, cfg, Path(args.out), refine=args.refine, progress=not args.quiet)
    print((parent / SATURATE_MD).read_text().split("\n## Steps")[0].rstrip())
    print(f"\nsaturate: {parent / SATURATE_JSON}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("saturate", help="step the offered rate up to each engine's maximum sustainable throughput")
    p.add_argument("scenario")
    p.add_argument("--engines", help="comma-separated engine names (overrides the scenario)")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument("--start-rate", type=float, help="first offered rate, workflows/s")
    p.add_argument("--factor", type=float, help="rate multiplier per step (default 1.5)")
    p.add_argument("--max-rate", type=float, help="highest rate tried")
    p.add_argument("--p99-target-ms", type=float, help="end-to-end p99 above this fails a step")
    p.add_argument("--repetitions", type=int, help="searches per engine (min / median / max)")
    p.add_argument("--step-duration", type=scenario.parse_duration, help="measured length of each step, e.g. 10s")
    p.add_argument("--warmup", type=scenario.parse_duration, help="warmup of each step, e.g. 3s")
    p.add_argument("--refine", type=int, default=0, help="bisection steps after the first failed rate (default 0)")
    p.add_argument("--workers", type=int, help="worker processes per engine")
    p.add_argument("--durability", help="strict | relaxed | volatile")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_saturate)
