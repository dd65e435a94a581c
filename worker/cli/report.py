"""An evaluation suite's report: one self-contained HTML page from its evaluations rows.

``build_report(sink, suite)`` reads the suite's rows (`jobs.evaluate.read_evaluations`),
draws the charts on matplotlib's Agg canvas (no pyplot state) and renders the page with
jinja2, autoescaped: model ids, labels and alert text are data, not markup. The page
needs no network: its CSS is inline and its charts are PNG ``data:`` URIs.

The charts: the score over time (one line per target and backend, each run's 95%
bootstrap interval as an error bar, breached runs marked in red, the minimum score when
known); the confusion matrix of each target's latest run (label scorer only); the
reliability diagram of each latest run (classify runs with label probabilities);
throughput over time (rows/s and prefill tokens/s of model time, so queue waits do not
count; decode tokens/s for generate suites only). Tables: runs (with the interval and the
paired test against the previous run), probability scores, per-label and per-slice
scores, and the rows the latest runs got wrong, by id. Times are UTC.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter

from jobs import ParquetSink, layout, read_evaluations
from worker.cli.report_page import TEMPLATE as _TEMPLATE

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

Row = dict[str, Any]

#: Applied to every chart; ``text.parse_math`` off so that a "$" in a label stays a "$".
CHART_STYLE: dict[RcKeyType, Any] = {"text.parse_math": False, "font.size": 9, "axes.grid": True,
               "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}
BREACH_COLOUR = "#d62728"
#: Line colours: tab10 without its red, which marks breaches.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
DPI = 110
LABEL_CHARS = 20    #: longer labels are cut short in charts; the tables show them whole


class NoEvaluationRuns(LookupError):
    """The suite has no evaluation runs where the report looked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A rendered report: the HTML page and its charts as PNG bytes."""

    html: str
    charts: dict[str, bytes]    #: "score", "confusion" (label scorer only), "throughput"

    def write(self, out: Path, png_dir: Path | None = None) -> list[Path]:
        """Write the page to ``out`` and, with ``png_dir``, each chart as ``<name>.png``."""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.html, encoding="utf-8")
        written = [out]
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
            for name, png in self.charts.items():
                (png_dir / f"{name}.png").write_bytes(png)
                written.append(png_dir / f"{name}.png")
        return written


def build_report(sink: ParquetSink, suite: str, *, min_score: float | None = None,
                 now: datetime | None = None) -> Report:
    """The report of ``suite``'s runs; `NoEvaluationRuns` when it has none.

    ``min_score`` draws the alert threshold (the dataset does not record it).
    """
    rows = read_evaluations(sink, suite).to_pylist()
    runs = [r for r in rows if r["kind"] == "run"]
    if not runs:
        raise NoEvaluationRuns(f"no evaluation runs of suite {suite!r} under "
                               f"{sink.location(layout.evaluations_dir(suite))}")
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(_series(runs))}
    latest = list({r["target"]: r for r in runs}.values())   # runs are oldest first
    charts = {"score": score_chart(runs, colours, min_score)}
    confusion = confusion_chart(latest)
    if confusion is not None:
        charts["confusion"] = confusion
    calibration = calibration_chart(latest, colours)
    if calibration is not None:
        charts["calibration"] = calibration
    charts["throughput"] = throughput_chart(runs, colours)
    latest_jobs = {r["job_id"]: r["target"] for r in latest}
    labels = [{"target": latest_jobs[r["job_id"]], "label": r["label"],
               "precision": _num(r["precision"]), "recall": _num(r["recall"]),
               "f1": _num(r["score"]), "support": r["support"]}
              for r in rows if r["kind"] == "label" and r["job_id"] in latest_jobs]
    slices = [{"target": latest_jobs[r["job_id"]], "slice": r["slice"], "n": r["n"],
               "score": _num(r["score"]), "interval": _interval(r),
               "accuracy": _num(r["accuracy"])}
              for r in rows if r["kind"] == "slice" and r["job_id"] in latest_jobs]
    examples = [{"target": latest_jobs[r["job_id"]], "job_id": r["job_id"],
                 "custom_id": r["custom_id"], "expected": r["expected"],
                 "predicted": "(error)" if r["predicted"] is None else r["predicted"]}
                for r in rows if r["kind"] == "example" and r["job_id"] in latest_jobs]
    probabilities = [{"target": r["target"], "log_loss": _num(r.get("log_loss")),
                      "brier": _num(r.get("brier")), "ece": _num(r.get("ece")),
                      "auc": _num(r.get("auc"))} for r in latest if r.get("log_loss") is not None]
    scorers = sorted({r["scorer"] for r in runs})
    page = _TEMPLATE.render(
        slices=slices, examples=examples, probabilities=probabilities,
        suite=suite, scorers=", ".join(scorers), runs=[_table_row(r) for r in reversed(runs)],
        targets=sorted({r["target"] for r in runs}), breached=sum(r["breached"] for r in runs),
        first=_when(runs[0]["finished_at"]), last=_when(runs[-1]["finished_at"]),
        generated=_when(now or datetime.now(UTC)), min_score=min_score, where=sink.location(),
        threshold="not known" if min_score is None else f"{min_score:g}",
        images={name: _data_uri(png) for name, png in charts.items()}, labels=labels,
        no_confusion=_why_no_confusion(scorers) if confusion is None else None)
    return Report(html=page, charts=charts)


@mpl.rc_context(CHART_STYLE)
def score_chart(runs: list[Row], colours: dict[str, str], min_score: float | None) -> bytes:
    """Score against finish time: a line per series, red crosses on breached runs."""
    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    handles: list[Any] = []
    for name, series in _series(runs).items():
        when = [r["finished_at"] for r in series]
        handles += ax.plot(when, [r["score"] for r in series],
                           marker="o", markersize=4, color=colours[name], label=name)
        bounded = [r for r in series if r.get("score_low") is not None]
        if bounded:
            ax.errorbar([r["finished_at"] for r in bounded], [r["score"] for r in bounded],
                        yerr=[[r["score"] - r["score_low"] for r in bounded],
                              [r["score_high"] - r["score"] for r in bounded]],
                        fmt="none", ecolor=colours[name], elinewidth=1, capsize=3, alpha=0.7)
    if any(r.get("score_low") is not None for r in runs):
        handles.append(Line2D([], [], color="black", marker="|", markersize=8, linewidth=0,
                              label="95% interval"))
    breached = [r for r in runs if r["breached"]]
    if breached:
        handles.append(ax.scatter([r["finished_at"] for r in breached],
                                  [r["score"] for r in breached], s=80, marker="X",
                                  color=BREACH_COLOUR, zorder=3, label="breached"))
    if min_score is not None:
        handles.append(ax.axhline(min_score, linestyle="--", linewidth=1, color=BREACH_COLOUR,
                                  label=f"min_score {min_score:g}"))
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("score")
    ax.set_title("Score per run")
    _time_axis(ax, runs)
    _legend(ax, handles)
    return _png(fig)


@mpl.rc_context(CHART_STYLE)
def throughput_chart(runs: list[Row], colours: dict[str, str]) -> bytes:
    """Rows/s above; prefill (solid) and decode (dashed) tokens/s below; same colours."""
    fig = _figure(9, 5.2)
    rows_ax, tokens_ax = fig.subplots(2, 1, sharex=True)
    handles: list[Any] = []
    decoding = [r for r in runs if _decodes(r)]
    for name, series in _series(runs).items():
        when = [r["finished_at"] for r in series]
        handles += rows_ax.plot(when, [r["rows_per_sec"] for r in series], marker="o",
                                markersize=4, color=colours[name], label=name)
        tokens_ax.plot(when, [r["prefill_tokens_per_sec"] for r in series], marker="o",
                       markersize=4, color=colours[name])
        decoded = [r for r in series if _decodes(r)]
        if decoded:
            tokens_ax.plot([r["finished_at"] for r in decoded],
                           [r["decode_tokens_per_sec"] for r in decoded], marker="s",
                           markersize=3, linestyle="--", color=colours[name])
    rows_ax.set_ylabel("rows / s of model time")
    rows_ax.set_title("Throughput per run")
    tokens_ax.set_ylabel("tokens / s of model time")
    for ax in (rows_ax, tokens_ax):
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))   # 1.5M, not a 1e6 offset
    _legend(rows_ax, handles)
    kinds = [Line2D([], [], color="black", marker="o", markersize=4, label="prefill")]
    if decoding:
        kinds.append(Line2D([], [], color="black", marker="s", markersize=3, linestyle="--",
                            label="decode"))
    _legend(tokens_ax, kinds)
    _time_axis(rows_ax, runs)
    _time_axis(tokens_ax, runs)
    return _png(fig)


def _decodes(run: Row) -> bool:
    """Whether a run generated tokens: classify runs (by op, or older rows with no decode
    time) have no decode series."""
    return run.get("op") != "classify" and bool(run["decode_tokens_per_sec"])


@mpl.rc_context(CHART_STYLE)
def calibration_chart(latest: list[Row], colours: dict[str, str]) -> bytes | None:
    """The reliability diagram of each target's latest run: accuracy against confidence per
    bin (marker area by rows), and the diagonal of perfect calibration; None without
    label probabilities."""
    diagrams = [(r, json.loads(r["reliability"])) for r in latest if r.get("reliability")]
    if not diagrams:
        return None
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    handles: list[Any] = ax.plot([0, 1], [0, 1], linestyle=":", color="grey",
                                 label="perfectly calibrated")
    names = {id(r): name for name, series in _series(latest).items() for r in series}
    for run, bins in diagrams:
        name = names[id(run)]
        total = sum(b["n"] for b in bins) or 1
        handles += ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                           color=colours.get(name, PALETTE[0]),
                           label=f"{_short(name, 40)} (ECE {_num(run.get('ece'))})")
        ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                   s=[20 + 200 * b["n"] / total for b in bins],
                   color=colours.get(name, PALETTE[0]), zorder=3)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("confidence: top label's probability")
    ax.set_ylabel("accuracy")
    ax.set_title("Calibration of the latest run (reliability)")
    _legend(ax, handles)
    return _png(fig)


@mpl.rc_context(CHART_STYLE)
def confusion_chart(latest: list[Row]) -> bytes | None:
    """A heatmap per target of its latest run (rows expected, columns predicted), or None."""
    matrices = [(r, json.loads(r["confusion"])) for r in latest if r["confusion"]]
    matrices = [(r, m) for r, m in matrices if m]
    if not matrices:
        return None
    size = max(len(next(iter(m.values()))) for _, m in matrices)
    side = max(3.4, 1.6 + 0.55 * size)
    columns = min(len(matrices), 3)
    fig = _figure(side * columns, side * math.ceil(len(matrices) / columns))
    for i, (run, matrix) in enumerate(matrices):
        _heatmap(fig.add_subplot(math.ceil(len(matrices) / columns), columns, i + 1),
                 run, matrix)
    return _png(fig)


def _heatmap(ax: Axes, run: Row, matrix: dict[str, dict[str, int]]) -> None:
    expected = list(matrix)
    predicted = list(dict.fromkeys(p for row in matrix.values() for p in row))
    counts = [[matrix[e].get(p, 0) for p in predicted] for e in expected]
    ax.imshow(counts, cmap="Blues", vmin=0, aspect="auto")
    peak = max(max(row) for row in counts)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > peak / 2 else "black")
    ax.set_xticks(range(len(predicted)), [_short(p) for p in predicted],
                  rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(expected)), [_short(e) for e in expected])
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    ax.set_title(f"{_short(run['target'], 40)}\n{_when(run['finished_at'])}")
    ax.grid(False)


def _series(runs: list[Row]) -> dict[str, list[Row]]:
    """Runs by target and backend ("target" alone when it names its backend)."""
    series: dict[str, list[Row]] = {}
    for r in runs:
        pinned = not r["backend"] or r["target"].endswith(f"@{r['backend']}")
        series.setdefault(r["target"] if pinned else f"{r['target']} ({r['backend']})",
                          []).append(r)
    return series


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _time_axis(ax: Axes, runs: list[Row]) -> None:
    first, last = runs[0]["finished_at"], runs[-1]["finished_at"]
    if first == last:   # one moment: an hour either side, not matplotlib's two years
        ax.set_xlim(first - timedelta(hours=1), last + timedelta(hours=1))
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    ax.set_xlabel("finished (UTC)")


def _legend(ax: Axes, handles: list[Any]) -> None:
    # Labels passed explicitly: ax.legend() would drop a target whose name starts with "_".
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _why_no_confusion(scorers: list[str]) -> str:
    if scorers == ["judge"]:
        return ("No confusion matrix: the judge scorer grades each answer; only the label "
                "scorer counts expected against predicted.")
    if "label" not in scorers:
        return (f"No confusion matrix: the {', '.join(scorers)} scorer judges each answer "
                "right or wrong; only the label scorer counts expected against predicted.")
    return "No confusion matrix: the latest runs scored no rows."


def _interval(row: Row) -> str:
    low, high = row.get("score_low"), row.get("score_high")
    return "–" if low is None or high is None else f"{low:.3f}–{high:.3f}"


def _versus(run: Row) -> str:
    if run.get("compared_job_id") is None:
        return "–"
    return f"{run['delta']:+.3f} ({run['test']}, p={run['p_value']:.2g})"


def _table_row(run: Row) -> dict[str, Any]:
    breach = run["breach"] or ""
    if run.get("awaiting_confirmation"):
        breach = f"awaiting a confirmation re-run: {breach}"
    return {"finished": _when(run["finished_at"]), "job_id": run["job_id"],
            "interval": _interval(run), "versus": _versus(run),
            "target": run["target"], "backend": run["backend"], "score": _num(run["score"]),
            "accuracy": _num(run["accuracy"]), "macro_f1": _num(run["macro_f1"]),
            "n": run["n"],
            "errors": f"{run['errors']} ({run['unparsed']} unparsed)" if run.get("unparsed")
            else run["errors"], "rows_per_sec": _num(run["rows_per_sec"], 1),
            "seconds_per_row": _num(run["seconds_per_row"], 4), "breached": run["breached"],
            "breach": breach}
