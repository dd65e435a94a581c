"""bench/run_all rewrites BENCHMARKS.md: fresh figures, kept readings, kept sections."""

from __future__ import annotations

from pathlib import Path

from bench.run_all import BENCHES, READING, compose, sections

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmarks_page_has_every_section_with_a_reading():
    found = sections((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))
    for module, title in BENCHES:
        assert title in found, title
        assert READING in found[title], f"{title}: no reading marker"
        assert f"bench.{module}" in found[title]


def test_a_rerun_replaces_the_figures_and_keeps_the_reading_and_other_sections():
    first = compose("", {m: f"| {m} | 1.00x |" for m, _ in BENCHES}, "2026-01-01")
    reading = "How to read the llama figures."
    first = first.replace("| bench_llama | 1.00x |", f"| bench_llama | 1.00x |\n\n{READING}\n\n"
                          f"{reading}")
    second = compose(first, {"bench_llama": "| bench_llama | 2.00x |"}, "2026-02-02")
    new = sections(second)
    llama_title = dict(BENCHES)["bench_llama"]
    assert "2.00x" in new[llama_title] and "1.00x" not in new[llama_title]
    assert "run 2026-02-02" in new[llama_title] and reading in new[llama_title]
    for _module, title in BENCHES[1:]:
        assert new[title] == sections(first)[title]  # not rerun: kept as it was
        assert "run 2026-01-01" in new[title]


def test_a_rerun_keeps_a_section_no_benchmark_writes():
    first = compose("", {m: f"| {m} | 1.00x |" for m, _ in BENCHES}, "2026-01-01")
    first += "\n## Container images\n\n`docker/check` — image size 1 GB\n"
    second = compose(first, {"bench_llama": "| bench_llama | 2.00x |"}, "2026-02-02")
    assert sections(second)["Container images"] == "`docker/check` — image size 1 GB"
    assert list(sections(second))[-1] == "Container images"


def test_only_takes_names_with_or_without_the_bench_prefix():
    from bench.run_all import resolve

    assert resolve("real") == resolve("bench_real") == "bench_real"
    assert resolve("queue") == "bench_queue"
    assert resolve("nope") is None
