"""`python -m bench [--quick] [--only NAME] [--out BENCHMARKS.md] [--chart PATH]`, run from the repo root.

Runs every benchmark in turn (time to ready, request overhead, cost against
the number of keys, reaction times, footprint), or only those `--only`
names, then writes the report and its chart. Exits 0 when the
report was written, even if parts of the run failed (the report says which):
CI runs `--quick` to keep the benchmarks from rotting, not to judge speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from . import footprint, keys, overhead, reaction, report, runner, startup, startup_real, system, vllm_client
from .chart import render as render_chart
from .procs import Timeout
from .settings import Settings

DEFAULT_OUT = runner.REPO / "BENCHMARKS.md"
DEFAULT_CHART = runner.REPO / "bench" / "results.svg"
WALL_LIMIT = {True: 10 * 60, False: 60 * 60}     # seconds; a run that takes longer is stuck


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one round (about 5 minutes; CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report to write [BENCHMARKS.md]")
    parser.add_argument("--chart", type=Path,
                        help="chart to write [bench/results.svg for the repo's BENCHMARKS.md, else beside --out]")
    parser.add_argument("--only", action="append", choices=STEP_NAMES, metavar="NAME",
                        help="run only this benchmark (again for more): " + ", ".join(STEP_NAMES))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs of every process)")
    return parser.parse_args(argv)


def chart_path(args: argparse.Namespace) -> Path:
    if args.chart is not None:
        return args.chart
    if args.out.resolve() == DEFAULT_OUT.resolve():
        return DEFAULT_CHART
    return args.out.with_suffix(".svg")


def say(message: str) -> None:
    print(message, flush=True)


def section(run: report.Run, name: str, action):
    """Run one benchmark; a failure is reported, and the others still run."""
    started = time.monotonic()
    try:
        return action()
    except (RuntimeError, Timeout, OSError, KeyError, ValueError) as error:
        run.errors.append(f"{name}: {type(error).__name__}: {error}")
        say(f"{name} FAILED: {error}")
        return None
    finally:
        say(f"  ({name}: {time.monotonic() - started:.0f} s)")


def real_engine_section(run: report.Run, name: str, action):
    """A section that needs vLLM: where it is missing, the report says so."""
    why_not = startup_real.missing()
    if why_not:
        run.errors.append(f"{name}: not run: {why_not}")
        return None
    return section(run, name, action)


@dataclasses.dataclass(frozen=True)
class Step:
    """One benchmark of the run."""

    heading: str            # said as it begins
    name: str               # in the report's errors and timings
    fills: str              # the field of report.Run it fills
    measure: Callable[[], object]
    real_engine: bool = False   # needs vLLM; runs only when the settings give it rounds (full runs)


def steps(runs: runner.Runs, settings: Settings) -> list[Step]:
    """Every benchmark, in the order they run."""
    return [
        Step("1/4 time to ready", "time to ready", "startup",
             lambda: startup.measure(runs, settings.engine_delay, settings.startup_rounds, say)),
        Step("1/4 time to ready, real engine", "time to ready, real engine", "real_startup",
             lambda: startup_real.measure(runs, settings.real_engine_rounds, say), real_engine=True),
        Step("2/4 request overhead", "request overhead", "overhead", lambda: overhead.measure(runs, settings, say)),
        Step("2/4 the real engine under vLLM's benchmark client", "vLLM's benchmark client", "vllm_client",
             lambda: vllm_client.measure(runs, settings.vllm_client_rounds, say), real_engine=True),
        Step("2/4 cost against the number of keys", "cost against the number of keys", "keys",
             lambda: keys.measure(runs, settings, say)),
        Step("3/4 reaction times", "reaction times", "reaction", lambda: reaction.measure(runs, settings, say)),
        Step("4/4 footprint: probe scripts", "probe scripts", "probes",
             lambda: footprint.probe_times(settings.probe_runs, settings.python_runs)),
    ]


# The fields each step fills, which --only names: the list of steps is built without running any.
STEP_NAMES = tuple(step.fills for step in steps(None, Settings.full()))


class Interrupted(Exception):
    """The run must end now (its wall-clock limit, or SIGTERM); not caught by any section."""


def _interrupt(signum, frame):
    if signum == signal.SIGALRM:
        raise Interrupted("the benchmark run took longer than its wall-clock limit")
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    args = parse(argv)
    settings = Settings.quick_run() if args.quick else Settings.full()
    os.chdir(runner.REPO)
    work = Path(tempfile.mkdtemp(prefix="llm-entry-bench-"))
    runs = runner.Runs(work)
    command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in argv)
    run = report.Run(settings=settings, command=command, machine=system.machine(), versions=system.versions(),
                     started=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    began = time.monotonic()
    signal.signal(signal.SIGALRM, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.alarm(WALL_LIMIT[settings.quick])
    say(f"benchmarks ({'quick' if settings.quick else 'full'}), work folder {work}")
    try:
        for step in steps(runs, settings):
            if (step.real_engine and not settings.real_engine_rounds) or (args.only and step.fills not in args.only):
                continue
            say(step.heading)
            run_it = real_engine_section if step.real_engine else section
            setattr(run, step.fills, run_it(run, step.name, step.measure))
    except Interrupted as error:
        run.errors.append(str(error))
        say(str(error))
    finally:
        signal.alarm(0)
        runs.stop_all()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    run.seconds = time.monotonic() - began
    run.load_at_end = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    write(run, args.out, chart_path(args))
    return 0


def write(run: report.Run, out: Path, chart: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    chart.parent.mkdir(parents=True, exist_ok=True)
    # The raw results first: a rendering bug must not lose a long run.
    raw = chart.with_suffix(".json")
    raw.write_text(json.dumps(dataclasses.asdict(run), indent=1, default=str, allow_nan=True))
    chart.write_text(render_chart(report.panels(run), "llm-entry benchmarks"
                                  + (" (quick run)" if run.settings.quick else "")))
    link = os.path.relpath(chart.resolve(), out.resolve().parent)
    out.write_text(report.render(run, link))
    say(f"wrote {out}, {chart} and {raw}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
