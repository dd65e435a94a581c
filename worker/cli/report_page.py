"""The HTML page of an evaluation report (`worker.cli.report`): one jinja2 template,
autoescaped, with inline CSS and charts as ``data:`` URIs, so the page needs no network."""

from __future__ import annotations

import jinja2

TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>inferq evaluation report: {{ suite }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; margin: 0; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
table { border-collapse: collapse; width: 100%; font-size: .9em; }
th, td { padding: .3em .6em; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.breached { background: #fdecea; } tr.breached td:first-child { border-left: 4px solid #d62728; }
.alert { color: #b71c1c; } .note { color: #555; font-style: italic; }
</style></head><body>
<h1>Evaluation report: {{ suite }}</h1>
<dl class="meta">
<dt>Scorer</dt><dd>{{ scorers }}</dd>
<dt>Runs</dt><dd>{{ runs | length }} ({{ breached }} breached)</dd>
<dt>Targets</dt><dd>{{ targets | join(", ") }}</dd>
<dt>Time range</dt><dd>{{ first }} – {{ last }} UTC</dd>
<dt>Minimum score</dt><dd>{{ threshold }}</dd>
<dt>Results</dt><dd>{{ where }}</dd>
<dt>Generated</dt><dd>{{ generated }} UTC</dd>
</dl>
<h2>Score over time</h2>
<figure><img src="{{ images.score }}" alt="Score of each run over time">
<figcaption>The headline score of each run ({{ scorers }}), one line per target and backend,
with its 95% bootstrap interval; red crosses mark breached runs{% if min_score is not none %},
the dashed line the minimum score{% endif %}.</figcaption></figure>
<h2>Confusion matrix</h2>
{% if images.confusion is defined %}
<figure><img src="{{ images.confusion }}" alt="Confusion matrix of each target's latest run">
<figcaption>The latest run of each target: rows are expected labels, columns predicted
ones, cells count rows; &lt;error&gt; counts rows the model failed on.</figcaption></figure>
{% else %}<p class="note">{{ no_confusion }}</p>{% endif %}
{% if images.calibration is defined %}<h2>Calibration</h2>
<figure><img src="{{ images.calibration }}" alt="Reliability diagram of each target's latest run">
<figcaption>The latest run of each target: rows binned by the top label's probability
(10 equal bins; marker area by rows), each bin's accuracy against its mean confidence.
On the dotted diagonal a model is right as often as it is sure.</figcaption></figure>
<table id="probabilities"><thead><tr><th>Target</th><th>Log-loss</th><th>Brier</th>
<th>ECE</th><th>AUC</th></tr></thead><tbody>
{% for p in probabilities %}<tr><td>{{ p.target }}</td><td class="num">{{ p.log_loss }}</td>
<td class="num">{{ p.brier }}</td><td class="num">{{ p.ece }}</td>
<td class="num">{{ p.auc }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
<h2>Throughput over time</h2>
<figure><img src="{{ images.throughput }}" alt="Throughput of each run over time">
<figcaption>Rows per second of model time, summed over the run's chunks so that queue
waits do not count (above); prefill (solid) and, for generate suites, decode (dashed)
tokens per second of model time (below).</figcaption></figure>
<h2>Runs</h2>
<table id="runs"><thead><tr><th>Finished (UTC)</th><th>Target</th><th>Backend</th>
<th>Score</th><th>95% interval</th><th>Change (paired test)</th><th>Accuracy</th>
<th>Macro-F1</th><th>n</th><th>Errors</th><th>Rows/s</th><th>s/row</th><th>Alert</th>
</tr></thead><tbody>
{% for r in runs %}<tr class="run{{ ' breached' if r.breached }}" title="job {{ r.job_id }}">
<td>{{ r.finished }}</td><td>{{ r.target }}</td><td>{{ r.backend }}</td>
<td class="num">{{ r.score }}</td><td class="num">{{ r.interval }}</td>
<td class="num">{{ r.versus }}</td><td class="num">{{ r.accuracy }}</td>
<td class="num">{{ r.macro_f1 }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ r.errors }}</td><td class="num">{{ r.rows_per_sec }}</td>
<td class="num">{{ r.seconds_per_row }}</td><td class="alert">{{ r.breach }}</td></tr>
{% endfor %}</tbody></table>
{% if labels %}<h2>Per-label scores (latest run of each target)</h2>
<table id="labels"><thead><tr><th>Target</th><th>Label</th><th>Precision</th><th>Recall</th>
<th>F1</th><th>Support</th></tr></thead><tbody>
{% for l in labels %}<tr><td>{{ l.target }}</td><td>{{ l.label }}</td>
<td class="num">{{ l.precision }}</td><td class="num">{{ l.recall }}</td>
<td class="num">{{ l.f1 }}</td><td class="num">{{ l.support }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if slices %}<h2>Per-slice scores (latest run of each target)</h2>
<table id="slices"><thead><tr><th>Target</th><th>Slice</th><th>n</th><th>Score</th>
<th>95% interval</th><th>Accuracy</th></tr></thead><tbody>
{% for s in slices %}<tr><td>{{ s.target }}</td><td>{{ s.slice }}</td>
<td class="num">{{ s.n }}</td><td class="num">{{ s.score }}</td>
<td class="num">{{ s.interval }}</td><td class="num">{{ s.accuracy }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if examples %}<h2>Wrong answers (latest run of each target)</h2>
<table id="examples"><thead><tr><th>Target</th><th>Row id</th><th>Expected</th>
<th>Predicted</th></tr></thead><tbody>
{% for e in examples %}<tr class="example" title="job {{ e.job_id }}"><td>{{ e.target }}</td>
<td>{{ e.custom_id }}</td><td>{{ e.expected }}</td><td>{{ e.predicted }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
</body></html>
""")
