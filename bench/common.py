"""Shared helpers for the benchmarks: the bench model, timing, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from inference.testing import BENCH_CONFIG, TinyLlama, build_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("INFERQ_BENCH_CACHE", ROOT / ".cache" / "bench-models"))
THREADS = int(os.environ.get("INFERQ_BENCH_THREADS", str(os.cpu_count() or 1)))


def bench_model() -> TinyLlama:
    """The ~71M-parameter f32 llama (random weights), built once and cached."""
    return build_tiny_llama(CACHE, BENCH_CONFIG)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(ours: Callable[[], object], theirs: Callable[[], object],
            repeats: int = 3) -> tuple[float, float]:
    """Median seconds of each, runs interleaved so that machine noise hits both alike."""
    ours(), theirs()  # warm-up: caches, thread pools, first-call allocations
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(ours))
        b.append(timed(theirs))
    return statistics.median(a), statistics.median(b)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def versions(*packages: str) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (absent)")
    return ", ".join(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``): what work
    cost a process, whatever else the machine was running meanwhile."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
