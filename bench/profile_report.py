"""Summarise a py-spy ``--format raw --threads [--gil]`` profile of the worker process.

    .venv/bin/python bench/profile_report.py bench/results/pipeline-<stamp>-worker.collapsed

Prints, as shares of all samples (with ``--gil``, as `--profile py-spy` records: of the time
some thread ran Python code, i.e. Python CPU time without fsync, epoll or SQLite's C code):

* per thread (the event loop vs the database thread);
* by the package of the innermost frame (where the CPU actually went: sqlalchemy, aiohttp,
  asyncio, json, structlog, orderwatch …);
* by the *innermost orderwatch frame* of each sample, i.e. which line of orderwatch asked for
  that work (``reference.py:_exchange`` owns the HTTP client's time, ``sql.py:apply`` the
  write-back's SQLAlchemy time, …);
* inclusive time of orderwatch functions (a function counted once per sample it is on).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def package(path: str) -> str:
    if path.startswith("orderwatch/"):
        return "orderwatch"
    if path.startswith(("pipeline.py", "bench/")):
        return "bench harness"
    head = path.split("/", 1)[0]
    if head.endswith(".py"):
        head = head[:-3]
    return head or "?"


def parse(path: Path) -> list[tuple[str, list[tuple[str, str, str]], int]]:
    samples = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        stack, _, count = raw.rpartition(" ")
        parts = stack.split(";")
        thread = parts[0]
        frames = []
        for part in parts[1:]:
            m = FRAME.match(part)
            if m:
                frames.append((m["func"], m["file"], m["line"] or "?"))
            else:
                frames.append((part, "?", "?"))
        samples.append((thread, frames, int(count)))
    return samples


def thread_name(thread: str) -> str:
    if ":" not in thread:  # py-spy had no name for it yet: the main thread, starting up
        return "MainThread"
    name = thread.split(":", 1)[-1].strip()
    return re.sub(r"_\d+$", "", name) or thread


def thread_cpu_per_call(profile: Path) -> dict[str, float]:
    """From ``pipeline-<stamp>.json`` beside ``pipeline-<stamp>-worker.collapsed``, if any."""
    name = profile.name.replace("-worker.collapsed", ".json")
    path = profile.with_name(name)
    if name == profile.name or not path.exists():
        return {}
    data = json.loads(path.read_text())
    per = data.get("orderwatch", {}).get("thread_cpu_per_call_us", {})
    names = {"event loop": "MainThread"}
    return {names.get(k, k): float(v) for k, v in per.items()}


def in_run(frames: list[tuple[str, str, str]]) -> bool:
    """False for start-up and wind-down: imports, opening the store, the harness's own steps
    before and after the worker runs (``role_worker`` is on the stack only then)."""
    if not frames:
        return False  # a thread holding the GIL with no Python frame: start-up, shutdown
    for func, file, _ in frames:
        if file.startswith("<frozen importlib") or func == "role_worker":
            return False
        if file in ("orderwatch/store/migrate.py", "orderwatch/service.py"):
            return False
    return True


@dataclass
class Tally:
    total: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    leaf_pkg: Counter[str] = field(default_factory=Counter)
    owner: Counter[str] = field(default_factory=Counter)  # innermost orderwatch line
    owner_pkg: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_func: Counter[str] = field(default_factory=Counter)  # innermost orderwatch function
    by_func_thread: Counter[tuple[str, str]] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)


def tally(samples: list[tuple[str, list[tuple[str, str, str]], int]]) -> Tally:
    t = Tally()
    for tname, frames, count in samples:
        t.total += count
        t.threads[thread_name(tname)] += count
        if not frames:
            continue
        lp = package(frames[-1][1])
        t.leaf_pkg[lp] += count
        own = next((f for f in reversed(frames) if f[1].startswith("orderwatch/")), None)
        key = f"{own[0]} ({own[1]}:{own[2]})" if own else "(no orderwatch frame)"
        fkey = f"{own[0]} ({own[1]})" if own else key
        t.owner[key] += count
        t.owner_pkg[(key, lp)] += count
        t.by_func[fkey] += count
        t.by_func_thread[(fkey, thread_name(tname))] += count
        seen = set()
        for func, file, _ in frames:
            if file.startswith("orderwatch/"):
                name = f"{func} ({file})"
                if name not in seen:
                    seen.add(name)
                    t.inclusive[name] += count
    return t


def report(path: Path, top: int, thread: str | None = None, *, everything: bool = False) -> str:
    samples = parse(path)
    dropped = 0
    if not everything:
        kept = [x for x in samples if in_run(x[1])]
        dropped = sum(c for _, _, c in samples) - sum(c for _, _, c in kept)
        samples = kept
    if thread is not None:
        samples = [x for x in samples if thread_name(x[0]) == thread]
    t = tally(samples)
    # With the run's JSON beside the profile: each thread's measured CPU per vendor call,
    # spread over that thread's samples, turns shares into estimated µs per call.
    cpu_us = thread_cpu_per_call(path)

    def pct(n: int) -> str:
        return f"{100.0 * n / t.total:5.1f}%"

    def us(fkey: str) -> str:
        if not cpu_us:
            return ""
        est = sum(
            t.by_func_thread[(fkey, th)] / n * cpu_us.get(th, 0.0)
            for th, n in t.threads.items()
            if n
        )
        return f"{est:6.1f} µs  "

    which = f"thread {thread}" if thread else "every thread"
    out = [f"{path.name}: {t.total:,} samples ({which})"]
    if dropped:
        out.append(f"({dropped:,} samples of start-up and wind-down left out; --all keeps them)")
    out += ["", "by thread:"]
    out += [f"  {pct(n)}  {name}" for name, n in t.threads.most_common()]
    out += ["", "by package of the innermost frame (where the CPU went):"]
    out += [f"  {pct(n)}  {name}" for name, n in t.leaf_pkg.most_common(top)]
    out += ["", "by innermost orderwatch function (which orderwatch code asked for the work):"]
    if cpu_us:
        out.append(
            "  (µs: estimated CPU per vendor call, from each thread's measured CPU per call: "
            + ", ".join(f"{k} {v:.0f} µs" for k, v in cpu_us.items())
            + ")"
        )
    out += [f"  {pct(n)}  {us(name)}{name}" for name, n in t.by_func.most_common(top)]
    out += ["", "the same, by line:"]
    for name, n in t.owner.most_common(top):
        split = ", ".join(
            f"{p} {100.0 * m / n:.0f}%"
            for (o, p), m in t.owner_pkg.most_common()
            if o == name and m / n >= 0.05
        )
        out.append(f"  {pct(n)}  {name}   [{split}]")
    out += ["", "inclusive, orderwatch functions:"]
    out += [f"  {pct(n)}  {name}" for name, n in t.inclusive.most_common(top)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", help="only this thread, e.g. MainThread or orderwatch-db")
    p.add_argument("--all", action="store_true", help="keep start-up and wind-down samples")
    opts = p.parse_args()
    print(report(opts.profile, opts.top, opts.thread, everything=opts.all))


if __name__ == "__main__":
    main()
