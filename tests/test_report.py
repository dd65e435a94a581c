"""`inferq eval report`: the HTML page, its charts, and how a real browser renders it."""

from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from jobs.evaluate import (
    EvalRun,
    Example,
    breaches,
    evaluation_table,
    read_evaluations,
    write_evaluation,
)
from jobs.outcomes import outcomes, probability_scores
from jobs.scorers import LabelScorer, make_scorer
from jobs.sinks import ParquetSink
from worker.cli.report import NoEvaluationRuns, build_report, throughput_chart

CHROMIUM = "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<b>neutral</b>"
LABELS = ["positive", "negative", HOSTILE]
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC).timestamp()


def pairs(right: int, n: int = 30) -> list[tuple[str | None, str]]:
    """``n`` rows over LABELS, the first ``right`` predicted correctly, one error row."""
    out: list[tuple[str | None, str]] = []
    for i in range(n):
        expected = LABELS[i % 3]
        predicted = expected if i < right else LABELS[(i + 1) % 3]
        out.append((None if i == n - 1 else predicted, expected))
    return out


def write_run(sink: ParquetSink, suite: str, i: int, target: str, backend: str, right: int,
              scorer: str = "label", min_score: float | None = None,
              speed: float = 1.0, op: str = "classify") -> EvalRun:
    """Score a hand-made run and write its rows; ``min_score`` checks it against that alert.
    Label runs get probabilities: 0.8 on the predicted label, the rest shared."""
    rows = pairs(right)
    chosen = make_scorer(scorer)
    score = chosen.score(rows)
    ids = [f"row{k}" for k in range(len(rows))]
    per_row = outcomes(chosen, ids, rows)
    probabilities = None
    if isinstance(chosen, LabelScorer):
        probabilities = probability_scores(chosen, [
            None if p is None else [{"label": lab, "prob": 0.8 if lab == p else 0.1}
                                    for lab in LABELS] for p, _ in rows], [e for _, e in rows])
    run = EvalRun(suite=suite, job_id=f"job{i:02d}-{target.replace('@', '-')}", target=target,
                  model=target.split("@")[0], backend=backend, score=score, op=op,
                  rows_per_sec=speed * (40 + 3 * i), prefill_tokens_per_sec=speed * (900 + 25 * i),
                  decode_tokens_per_sec=speed * (120 + 4 * i), seconds_per_row=0.02 / speed,
                  finished_at=START + i * 6 * 3600, interval=per_row.interval(),
                  probabilities=probabilities,
                  examples=[Example(custom_id=k, expected=e, predicted=p)
                            for k, (p, e), ok in zip(ids, rows, per_row.correct, strict=True)
                            if not ok])
    if min_score is not None:
        run = replace(run, breaches=breaches(run, {"min_score": min_score}, None))
    write_evaluation(sink, suite, run.job_id, evaluation_table(run))
    return run


BREACH = "score 0.474 is below the minimum 0.800"


@pytest.fixture
def sink(tmp_path: Path) -> ParquetSink:
    """Suite "sentiment": 4 runs of demo and 4 of tiny@llama_cpp, the last demo run breached."""
    sink = ParquetSink(str(tmp_path / "results"))
    for i in range(4):
        write_run(sink, "sentiment", i, "demo", "fake", 14 if i == 3 else 24 + i,
                  min_score=0.8)
        write_run(sink, "sentiment", i, "tiny@llama_cpp", "llama_cpp", 20 + 2 * i, speed=0.6)
    return sink


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature and CRC."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    crc, = struct.unpack(">I", data[29:33])
    assert zlib.crc32(data[12:29]) == crc
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_report_holds_the_suite_a_chart_per_kind_a_row_per_run_and_the_alert(sink):
    report = build_report(sink, "sentiment", min_score=0.8)
    html = report.html
    assert "<h1>Evaluation report: sentiment</h1>" in html
    sources = image_sources(html)
    assert len(sources) == 4 and list(report.charts) == ["score", "confusion", "calibration",
                                                          "throughput"]
    for source, png in zip(sources, report.charts.values(), strict=True):
        assert source.startswith("data:image/png;base64,")
        decoded = base64.b64decode(source.removeprefix("data:image/png;base64,"))
        assert decoded == png
        width, height = png_size(decoded)
        assert width > 300 and height > 200
        assert matplotlib.image.imread(io.BytesIO(decoded)).shape[:2] == (height, width)
    assert html.count('<tr class="run') == 8
    assert html.count('<tr class="run breached"') == 1
    assert BREACH in html
    assert "Minimum score</dt><dd>0.8</dd>" in html


def test_runs_are_listed_newest_first(sink):
    html = build_report(sink, "sentiment").html
    finished = re.findall(r'<tr class="run[^"]*"[^>]*>\s*<td>([^<]+)</td>', html)
    assert finished == sorted(finished, reverse=True) and len(finished) == 8
    assert finished[0] == "2026-03-02 00:00:00"


def test_a_label_with_markup_is_escaped_not_rendered(sink):
    html = build_report(sink, "sentiment").html
    assert HOSTILE not in html
    assert "&lt;b&gt;neutral&lt;/b&gt;" in html


def test_a_suite_without_runs_is_an_error_naming_it_and_where_it_looked(sink):
    with pytest.raises(NoEvaluationRuns, match="'translation'") as info:
        build_report(sink, "translation")
    assert f"{sink.root}/evaluations/suite=translation" in str(info.value)


def test_a_non_label_scorer_gets_no_heatmap_and_says_so(tmp_path):
    sink = ParquetSink(str(tmp_path / "results"))
    for i in range(2):
        write_run(sink, "answers", i, "demo", "fake", 20 + i, scorer="exact")
    report = build_report(sink, "answers")
    assert list(report.charts) == ["score", "throughput"]      # no probabilities either
    assert len(image_sources(report.html)) == 2
    assert "No confusion matrix: the exact scorer" in report.html


def test_a_single_run_still_draws_every_chart(tmp_path):
    sink = ParquetSink(str(tmp_path / "results"))
    write_run(sink, "sentiment", 0, "demo", "fake", 25)
    report = build_report(sink, "sentiment")
    assert list(report.charts) == ["score", "confusion", "calibration", "throughput"]
    assert all(png_size(png)[0] > 300 for png in report.charts.values())
    assert report.html.count('<tr class="run') == 1


def test_png_dir_gets_each_chart_as_a_file(sink, tmp_path):
    written = build_report(sink, "sentiment").write(tmp_path / "r.html", tmp_path / "png")
    assert [p.name for p in written] == ["r.html", "score.png", "confusion.png",
                                         "calibration.png", "throughput.png"]
    for path in written[1:]:
        png_size(path.read_bytes())


def test_the_report_shows_intervals_probability_scores_and_wrong_rows_by_id(tmp_path):
    sink = ParquetSink(str(tmp_path / "results"))
    write_run(sink, "sentiment", 0, "demo", "fake", 24)
    latest = write_run(sink, "sentiment", 1, "demo", "fake", 20)
    html = build_report(sink, "sentiment").html
    assert latest.interval is not None
    low, high = latest.interval
    assert f"{low:.3f}–{high:.3f}" in html
    assert latest.probabilities is not None
    assert f'<td class="num">{latest.probabilities.ece:,.3f}</td>' in html
    wrong = re.findall(r'<tr class="example"[^>]*><td>demo</td>\s*<td>(row\d+)</td>', html)
    assert wrong == [e.custom_id for e in latest.examples] and len(wrong) == 10
    assert "<td>(error)</td>" in html      # the error row, row29


def test_judge_replies_that_did_not_parse_are_shown_with_the_errors(tmp_path):
    sink = ParquetSink(str(tmp_path / "results"))
    judge = make_scorer("judge", {"model": "judge", "rubric": "{answer}"})
    score = judge.score([("5", "a"), ("five", "b"), (None, "c")])
    run = EvalRun(suite="answers", job_id="j1", target="demo", model="demo", backend="fake",
                  score=score, rows_per_sec=1.0, prefill_tokens_per_sec=1.0,
                  decode_tokens_per_sec=1.0, seconds_per_row=1.0, finished_at=START,
                  op="generate")
    write_evaluation(sink, "answers", run.job_id, evaluation_table(run))
    html = build_report(sink, "answers").html
    assert '<td class="num">2 (1 unparsed)</td>' in html
    assert "No confusion matrix: the judge scorer grades each answer" in html


def test_per_slice_scores_are_tabled(tmp_path):
    from jobs.evaluate import SliceScore

    sink = ParquetSink(str(tmp_path / "results"))
    run = write_run(sink, "sentiment", 0, "demo", "fake", 24)
    short = SliceScore(slice="short", score=make_scorer("label").score(pairs(24)[:10]),
                       interval=(0.4, 0.9))
    write_evaluation(sink, "sentiment", run.job_id, evaluation_table(replace(run, slices=[short])))
    html = build_report(sink, "sentiment").html
    assert re.search(r"<td>demo</td><td>short</td>\s*<td class=\"num\">10</td>", html)
    assert "0.400–0.900" in html


def test_classify_runs_draw_no_decode_series(tmp_path):
    sink = ParquetSink(str(tmp_path / "results"))
    for i in range(3):
        write_run(sink, "s", i, "demo", "fake", 24)
    runs = [r for r in read_evaluations(sink, "s").to_pylist() if r["kind"] == "run"]
    colours = {"demo (fake)": "#1f77b4"}
    faster = [r | {"decode_tokens_per_sec": 10 * r["decode_tokens_per_sec"]} for r in runs]
    assert throughput_chart(runs, colours) == throughput_chart(faster, colours)
    generate = [r | {"op": "generate"} for r in runs]
    faster_generate = [r | {"op": "generate"} for r in faster]
    assert throughput_chart(generate, colours) != throughput_chart(faster_generate, colours)


def test_an_evaluation_file_of_the_first_schema_still_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.schema import EVALUATIONS_SCHEMA

    sink = ParquetSink(str(tmp_path / "results"))
    run = write_run(sink, "sentiment", 0, "demo", "fake", 24)
    first = pa.schema(list(EVALUATIONS_SCHEMA)[:EVALUATIONS_SCHEMA.get_field_index(
        "finished_at") + 1])
    path = tmp_path / "results" / "evaluations" / "suite=sentiment" / f"{run.job_id}.parquet"
    table = pq.read_table(path).select(first.names).cast(first)
    table = table.filter(pa.compute.not_equal(table["kind"], "example"))
    pq.write_table(table, path)
    report = build_report(sink, "sentiment")
    assert list(report.charts) == ["score", "confusion", "throughput"]   # no reliability
    assert report.html.count('<tr class="run') == 1 and "<td class=\"num\">–</td>" in report.html


class _Elements(HTMLParser):
    """Counts the tags of a DOM dump, with the attributes of each img."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append(dict(attrs).get("class") or "")
        elif tag == "img":
            self.images.append(dict(attrs))


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_chromium_renders_the_report_with_its_charts_and_table(sink, tmp_path):
    page = build_report(sink, "sentiment").write(tmp_path / "report.html")[0]
    # Images load before the screenshot; the script stamps each image's decoded width.
    page.write_text(page.read_text().replace("</body>", (
        "<script>addEventListener('load', () => { for (const i of document.images)"
        " i.dataset.width = i.naturalWidth; });</script></body>")))
    shot = tmp_path / "shot.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert done.returncode == 0, done.stderr
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05     # a blank page is one colour: std 0
    dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    elements = _Elements()
    elements.feed(dom.stdout)
    assert sum(c.startswith("run") for c in elements.rows) == 8
    assert len(elements.images) == 4
    assert all(int(i["data-width"] or 0) > 300 for i in elements.images), elements.images


@pytest.mark.slow
def test_eval_report_renders_runs_made_by_a_real_worker(redis_url, tmp_path, start_worker):
    from tests.test_evals import SUITE, run_cli, suites_file

    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = suites_file(tmp_path, SUITE.format(extra="alerts = { min_score = 0.99 }"))
    for _ in range(2):
        ran = run_cli(redis_url, results, "eval", "run", "sentiment", "--suites", str(path),
                      "--wait")
        assert ran.returncode in (0, 1), ran.stderr
    out = tmp_path / "r.html"
    report = run_cli(redis_url, results, "eval", "report", "sentiment", "--suites", str(path),
                     "--out", str(out), "--png", str(tmp_path / "png"))
    assert report.returncode == 0, report.stderr
    assert report.stdout.split() == [str(out), *(str(tmp_path / "png" / f"{n}.png")
                                                 for n in ("score", "confusion", "calibration",
                                                           "throughput"))]
    html = out.read_text()
    assert html.count('<tr class="run') == 2 and "Minimum score</dt><dd>0.99</dd>" in html
    unknown = run_cli(redis_url, results, "eval", "report", "nosuch", "--suites", str(path),
                      "--out", str(tmp_path / "x.html"))
    assert unknown.returncode == 2
    assert "no evaluation runs of suite 'nosuch'" in unknown.stderr
    assert "'nosuch' is not a suite in" in unknown.stderr
    assert not (tmp_path / "x.html").exists()
    shutil.rmtree(results / "evaluations")
    empty = run_cli(redis_url, results, "eval", "report", "sentiment", "--suites", str(path),
                    "--out", str(tmp_path / "y.html"))
    assert empty.returncode == 2 and f"{results}/evaluations/suite=sentiment" in empty.stderr
