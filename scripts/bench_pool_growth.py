"""How a growing pool costs: routing's p95 idle and during a classifier refit (10k entries), the
time and memory of a start on a 100k-entry pool whose fit is stored, for this checkout and
another (the old code), each in fresh processes on its own copy of the same database.

    python scripts/bench_pool_growth.py [--old-root /work/main] [--refit-size 10000]
        [--start-size 100000] [--refits 3] [--starts 3] [--gap-ms 100] [--window 60]
        [--fitted-db DB_OF_START_SIZE_WITH_ITS_FIT_STORED]

Large pools are built from the seed pool: real vectors plus small noise (re-normalized), and
real texts made into variants (a chat opener and closer around a seed text), same labels,
written to a temporary SQLite file; nothing is embedded but the messages routed. Messages are
routed one every --gap-ms (a chat has gaps; a refit at idle priority works in them), each
embedded afresh; "during" covers a refit until it ends or --window seconds pass. A start is
timed from before `open_router` to its return, after one start that fits and stores the
classifier (not counted); its RSS is read right after, its peak from the kernel. Prints figures;
asserts nothing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT / "tests" / "data" / "dev_set.jsonl"

OPENERS = ("", "ok ", "btw ", "hey, ", "嗯 ", "那個 ", "あの、", "also: ", "hmm ", "quick one: ")
CLOSERS = ("", "?", "!", " pls", " 謝謝", " ありがと", " :)", " lol", " thanks", " 😅", " …")

# Runs in the measured checkout (PYTHONPATH): one start, or routing idle and during refits.
CHILD = r"""
import asyncio, gc, json, resource, sys, time
from bot.config import CrabbotConfig
from router import Secrets, open_router

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def config(db):
    return CrabbotConfig.model_validate({
        "database": {"path": db}, "routing": {"mode": "live"},
        "categorizer": {"enabled": False}, "local": {"min_confidence": 0.0}})

async def route_ms(router, texts, gap_s=0.0, until=None):
    # Each message's routing time, one message every gap_s (traffic with gaps, as a chat
    # has), until the texts run out or until() says stop.
    times, next_at, i = [], time.perf_counter(), 0
    while i < len(texts) if until is None else not until():
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += gap_s
        router.embedder.clear_cache()
        started = time.perf_counter()
        router.finish(await router.route(texts[i % len(texts)]), "routed")
        times.append((time.perf_counter() - started) * 1000)
        i += 1
    return times

async def start(db):
    started = time.perf_counter()
    router = await open_router(config(db), Secrets(groq_api_key=None))
    took = time.perf_counter() - started
    gc.collect()
    rss = rss_mb()
    await router.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"start_s": took, "rss_mb": rss, "peak_mb": peak, "pool": router.pool_size}

async def refit(db, texts, refits, gap_s, window_s):
    # Routing idle, then during a refit (for at most window_s), `refits` times; a refit still
    # running at the end of its window is cancelled (a child is killed; a thread waited for).
    router = await open_router(config(db), Secrets(groq_api_key=None))
    idle, during, refit_s = [], [], []
    try:
        await route_ms(router, texts[:5])
        for _ in range(refits):
            idle += await route_ms(router, texts, gap_s)
            router.fitting.refit()
            task = router.fitting.refit_task
            started = time.perf_counter()
            over = lambda: task.done() or time.perf_counter() - started > window_s
            during += await route_ms(router, texts, gap_s, over)
            if task.done():
                refit_s.append(time.perf_counter() - started)
            else:
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    finally:
        await router.close()
    return {"idle": idle, "during": during, "refit_s": refit_s, "pool": router.pool_size}

kind, db = sys.argv[1], sys.argv[2]
if kind == "start":
    result = asyncio.run(start(db))
else:
    texts = json.load(open(sys.argv[3], encoding="utf-8"))
    result = asyncio.run(refit(db, texts, int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])))
print(json.dumps(result))
"""


def seed_template(path: Path) -> None:
    """A seeded database made by this checkout (the pool table is the same in both)."""
    code = (
        "import asyncio, sys\n"
        "from bot.config import CrabbotConfig\n"
        "from router import Secrets, open_router\n"
        "async def main():\n"
        "    c = CrabbotConfig.model_validate({'database': {'path': sys.argv[1]},"
        " 'categorizer': {'enabled': False}})\n"
        "    r = await open_router(c, Secrets(groq_api_key=None))\n"
        "    await r.close()\n"
        "asyncio.run(main())\n"
    )
    run_child(ROOT, ["-c", code, str(path)])


def grow_pool(db: Path, size: int, seed: int = 7) -> None:
    """Fill the pool to `size` rows: seed vectors plus noise, seed texts in chat variants."""
    from router.text import text_hash

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT embedding, category, embedder_id, text FROM pool").fetchall()
        base = np.frombuffer(b"".join(r[0] for r in rows), np.float32).reshape(len(rows), -1)
        seen = {text_hash(r[3]) for r in rows}
        rng = np.random.default_rng(seed)
        fresh: list[tuple[int, str, str]] = []
        while len(seen) < size:
            pick = int(rng.integers(0, len(rows)))
            text = rng.choice(OPENERS) + rows[pick][3] + rng.choice(CLOSERS)
            digest = text_hash(text)
            if digest not in seen:
                seen.add(digest)
                fresh.append((pick, text, digest))
        picks = np.array([p for p, _, _ in fresh], dtype=np.int64)
        noise = rng.normal(0, 0.02, (len(fresh), base.shape[1])).astype(np.float32)
        vectors = base[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        conn.executemany(
            "INSERT INTO pool (prompt_hash, text, embedding, embedder_id, category, label_source,"
            " added_at) VALUES (?, ?, ?, ?, ?, 'synthetic', 0)",
            (
                (digest, text, vectors[i].tobytes(), rows[p][2], rows[p][1])
                for i, (p, text, digest) in enumerate(fresh)
            ),
        )
        # The calibration stored for the seed pool no longer fits a pool this size.
        conn.execute("DELETE FROM settings WHERE key = 'local_calibration'")
        conn.execute("DELETE FROM fitted_state")


def run_child(root: Path, args: list[str]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=root, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child failed in {root}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}


def p95(values: list[float]) -> float:
    return float(np.percentile(np.array(values), 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-root", type=Path, default=None)
    parser.add_argument("--refit-size", type=int, default=10_000)
    parser.add_argument("--start-size", type=int, default=100_000)
    parser.add_argument("--refits", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=100.0, help="between routed messages")
    parser.add_argument("--window", type=float, default=60.0, help="most seconds of a refit")
    parser.add_argument("--skip", nargs="*", default=[], choices=["refit", "start"])
    parser.add_argument(
        "--fitted-db",
        type=Path,
        default=None,
        help="a database of --start-size entries whose fit is stored: skips the first start",
    )
    args = parser.parse_args()
    roots = {"new": ROOT} | ({"old": args.old_root.resolve()} if args.old_root else {})
    workdir = Path(tempfile.mkdtemp())
    template = workdir / "seeded.db"
    seed_template(template)
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines()]
    texts = [row["text"] for row in rows if "text" in row]
    texts_file = workdir / "texts.json"
    texts_file.write_text(json.dumps(texts[: args.messages], ensure_ascii=False), "utf-8")
    try:
        if "refit" not in args.skip:
            refit_bench(
                roots,
                template,
                workdir,
                texts_file,
                args.refit_size,
                args.refits,
                args.gap_ms,
                args.window,
            )
        if "start" not in args.skip:
            start_bench(roots, template, workdir, args.start_size, args.starts, args.fitted_db)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def pool_copy(template: Path, workdir: Path, size: int, name: str) -> Path:
    grown = workdir / f"pool-{size}.db"
    if not grown.exists():
        shutil.copy(template, grown)
        grow_pool(grown, size)
    db = workdir / f"{name}-{size}.db"
    shutil.copy(grown, db)
    return db


def refit_bench(
    roots: dict[str, Path],
    template: Path,
    workdir: Path,
    texts: Path,
    size: int,
    refits: int,
    gap_ms: float,
    window_s: float,
) -> None:
    print(f"routing idle and during a refit, {size:,}-entry pool ({refits} refits), ms:")
    print(
        f"{'code':>6} {'idle p50':>9} {'p95':>7} {'refit p50':>10} {'p95':>7} {'max':>7}"
        f" {'p95 ratio':>10} {'refit s':>8} {'routed in refit':>16}"
    )
    for name, root in roots.items():
        db = pool_copy(template, workdir, size, name)
        run_child(root, ["-c", CHILD, "start", str(db)])  # fits and stores
        args = [str(refits), str(gap_ms / 1000), str(window_s)]
        got = run_child(root, ["-c", CHILD, "refit", str(db), str(texts), *args])
        idle, during = list(got["idle"]), list(got["during"])  # type: ignore[call-overload]
        print(
            f"{name:>6} {statistics.median(idle):>9.2f} {p95(idle):>7.2f}"
            f" {statistics.median(during):>10.2f} {p95(during):>7.2f} {max(during):>7.2f}"
            f" {p95(during) / p95(idle):>9.2f}x"
            f" {refit_seconds(got['refit_s'], window_s):>8} {len(during):>16}"  # type: ignore[arg-type]
        )


def refit_seconds(finished: list[float], window_s: float) -> str:
    """The median refit's seconds; '>window' when a refit outlasted its window."""
    return f"{statistics.median(finished):.1f}" if finished else f">{window_s:.0f}"


def start_bench(
    roots: dict[str, Path],
    template: Path,
    workdir: Path,
    size: int,
    starts: int,
    fitted_db: Path | None = None,
) -> None:
    """This checkout's first start fits and stores; every checkout then starts on a copy of
    that database (the stored fit is the same for both: the old code reads the classifier and
    builds its index again), in alternating rounds."""
    print(f"a start on a {size:,}-entry pool whose fit is stored ({starts} alternating rounds):")
    if fitted_db is not None:
        first_db = fitted_db
    else:
        first_db = pool_copy(template, workdir, size, "first")
        first = run_child(ROOT, ["-c", CHILD, "start", str(first_db)])
        print(
            f"  (the first start, which fits and stores: {first['start_s']:.1f} s,"
            f" peak {first['peak_mb']:.0f} MB, this checkout)"
        )
    dbs = {name: workdir / f"{name}-start-{size}.db" for name in roots}
    for db in dbs.values():
        shutil.copy(first_db, db)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    for _ in range(starts):
        for name, root in roots.items():
            runs[name].append(run_child(root, ["-c", CHILD, "start", str(dbs[name])]))  # type: ignore[arg-type]
    print(f"{'code':>6} {'start s':>8} {'peak MB':>8} {'RSS MB':>7}")
    for name, got in runs.items():
        print(
            f"{name:>6} {statistics.median(g['start_s'] for g in got):>8.2f}"
            f" {statistics.median(g['peak_mb'] for g in got):>8.0f}"
            f" {statistics.median(g['rss_mb'] for g in got):>7.0f}"
        )


if __name__ == "__main__":
    main()
