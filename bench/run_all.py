"""Run every benchmark and rewrite BENCHMARKS.md from their output.

    ./bench/run_all                      # every benchmark (about 30 minutes on 2 cores)
    ./bench/run_all --only bench_queue   # one; the other sections are kept as they are
    ./bench/run_all --only real          # the same, without the bench_ prefix
    ./bench/run_all --only serve         # inferq serve vs inferq submit (fake backend)
    ./bench/run_all --only prefix        # a templated job vs llama-server -np 8 (SmolLM2)
    ./bench/run_all --only labels        # 2, 20, 200 labels vs Llama's state-reuse loop
    ./bench/run_all --only fairness      # a small job behind a big one: feeder vs FIFO
    ./bench/run_all --only chunk_cost    # what the queue costs a chunk: time, Redis, CPU
    ./bench/run_all --only scale         # 1 to 16 workers on one Redis (fake backend)
    ./bench/run_all --only inputs        # Redis memory and submit time, inputs in Redis or not

Each benchmark prints its own markdown (machine, versions, the table); this script adds
the command and the date, and keeps the hand-written reading of each section, which
lives under ``## ...`` after a ``<!-- reading -->`` marker and survives a rerun.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "BENCHMARKS.md"
READING = "<!-- reading -->"

#: (module, section title), in the order the page shows them.
BENCHES = (
    ("bench_llama", "llama.cpp backend vs llama-cpp-python's high-level API"),
    ("bench_mlx", "MLX backend vs mlx-lm's own batch generation"),
    ("bench_queue", "Queue overhead: submit, Redis, worker, Parquet vs in-process"),
    ("bench_ceiling", "Machinery ceiling (fake backend) and a million-row submit"),
    ("bench_chunk_cost", "Queue cost a chunk: Redis commands, bytes and CPU (fake backend)"),
    ("bench_scale", "Many workers on one Redis: chunks/s against worker count (fake backend)"),
    ("bench_real", "A real model: SmolLM2-135M-Instruct on llama.cpp"),
    ("bench_serve", "OpenAI Batch API: `inferq serve` vs `inferq submit`"),
    ("bench_prefix", "A templated classify job: inferq's prefix cache vs warm `llama-server`"),
    ("bench_labels", "Many labels: classify with 2, 20 and 200 labels (SmolLM2)"),
    ("bench_fairness", "Fair feeding: a small job submitted behind a big one"),
    ("bench_metrics", "A metrics scrape over many jobs vs reading list lengths"),
    ("bench_inputs", "Chunk inputs: in Redis vs Parquet under the results root"),
)

HEADER = """# Benchmarks

Every figure comes from a script in `bench/`, run as shown, on the machine named,
against the alternative measured in the same run (medians of interleaved runs after a
warm-up). Machines are shared and noisy: read the ratios, not the absolute rates. The
model is the ~71M-parameter f32 llama with random weights that
`inference.testing.BENCH_CONFIG` generates (same weights as GGUF and as MLX
safetensors, byte-level vocabulary: one token per byte of text), except in the sections
that say they run a real model (SmolLM2-135M-Instruct, Q4_1). `./bench/run_all`
rewrites this page.
"""


def run(module: str) -> str:
    """The benchmark's markdown output (its progress lines left out)."""
    done = subprocess.run([sys.executable, "-m", f"bench.{module}"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    lines = [ln for ln in done.stdout.splitlines() if not ln.startswith("repeat ")]
    return "\n".join(lines).strip()


def sections(page: str) -> dict[str, str]:
    """Title -> body of each ``## `` section of an existing page."""
    found: dict[str, str] = {}
    title = None
    body: list[str] = []
    for line in page.splitlines():
        if line.startswith("## "):
            if title is not None:
                found[title] = "\n".join(body).strip()
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        found[title] = "\n".join(body).strip()
    return found


def section(module: str, output: str, reading: str, when: str) -> str:
    parts = [f"`python -m bench.{module}` — run {when}", output]
    if reading:
        parts += [READING, reading]
    return "\n\n".join(parts)


def compose(old_page: str, fresh: dict[str, str], when: str) -> str:
    """The new page: fresh output for the benchmarks that ran, old sections for the rest."""
    old = sections(old_page)
    out = [HEADER.strip()]
    for module, title in BENCHES:
        previous = old.get(title, "")
        reading = previous.split(READING, 1)[1].strip() if READING in previous else ""
        if module in fresh:
            body = section(module, fresh[module], reading, when)
        elif previous:
            body = previous
        else:
            body = f"Not run yet: `python -m bench.{module}`."
        out.append(f"## {title}\n\n{body}")
    # Sections no benchmark here writes (the container images' figures) stay, in order.
    titles = {title for _, title in BENCHES}
    out += [f"## {title}\n\n{body}" for title, body in old.items() if title not in titles]
    return "\n\n".join(out) + "\n"


def resolve(name: str) -> str | None:
    """The module a ``--only`` name means: ``real`` and ``bench_real`` are the same."""
    names = {m for m, _ in BENCHES}
    for candidate in (name, f"bench_{name}"):
        if candidate in names:
            return candidate
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [m for m, _ in BENCHES]
    parser.add_argument("--only", nargs="+", metavar="NAME", default=names,
                        help="benchmarks to run, with or without the bench_ prefix: "
                             + ", ".join(n.removeprefix("bench_") for n in names))
    args = parser.parse_args()
    only = [resolve(name) for name in args.only]
    unknown = [name for name, module in zip(args.only, only, strict=True) if module is None]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from "
                     + ", ".join(n.removeprefix("bench_") for n in names))
    args.only = only
    fresh = {}
    for module in args.only:
        print(f"running bench.{module} ...", file=sys.stderr, flush=True)
        fresh[module] = run(module)
    old = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    when = time.strftime("%Y-%m-%d")
    TARGET.write_text(compose(old, fresh, when), encoding="utf-8")
    print(f"rewrote {TARGET.name}: {', '.join(args.only)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
