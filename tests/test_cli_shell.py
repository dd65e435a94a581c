"""Batch-file and shell habits of `inferq`, run as a user runs them: templates over a
CSV, ``-`` for standard input and output, export formats by file name, refused
submissions that leave nothing behind, one-line broker URL mistakes.

Against a real redis-server and a real ``inferq worker`` on the fake backend, whose
answers are functions of the prompt: two inputs that give the same generated text
gave the engine the same prompt (or the same chat)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

INFERQ = str(Path(sys.executable).parent / "inferq")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
#: `inferq run` on the fake backend: no Redis, no model file.
FAKE = {"INFERQ_BACKENDS": "fake", "INFERQ_FAKE_MODELS": "demo"}
REVIEWS = [("r01", "Absolutely love this blender.", "positive"),
           ("r02", "Broke after two days.", "negative"),
           ("r03", "Works, but the {lid} leaks.", "negative"),
           ("r04", "Best purchase this year!", "positive")]
TEMPLATE = r"Review: {text}\nSentiment:"


def inferq(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
           cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([INFERQ, *args], input=stdin, capture_output=True, timeout=timeout,
                          env=CLEAN_ENV | (env or {}), cwd=cwd)


def err(out: subprocess.CompletedProcess[bytes]) -> str:
    return out.stderr.decode()


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def write_reviews(path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "sentiment"])
        writer.writerows(REVIEWS)
    return path


def write_jsonl(path: Path, objects: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return path


def run_fake(tmp: Path, *args: str, stdin: bytes | None = None) -> list[dict]:
    """``inferq run generate ARGS --to -``: the result rows, in row order."""
    out = inferq("--results", str(tmp / "results"), "run", "generate", *args, "--model", "demo",
                 "--max-tokens", "8", "--to", "-", stdin=stdin, env=FAKE)
    assert out.returncode == 0, err(out)
    return jsonl(out.stdout)


# -- templates, system messages, columns: `inferq run`, no Redis ---------------------------


def test_a_templated_csv_gives_the_engine_the_prompts_a_hand_written_jsonl_gives(tmp_path):
    templated = run_fake(tmp_path, str(write_reviews(tmp_path / "reviews.csv")),
                         "--template", TEMPLATE, "--id-column", "id",
                         "--expected-column", "sentiment")
    by_hand = run_fake(tmp_path, str(write_jsonl(tmp_path / "prompts.jsonl", [
        {"custom_id": i, "prompt": f"Review: {t}\nSentiment:"} for i, t, _ in REVIEWS])))
    assert [r["custom_id"] for r in templated] == [i for i, _, _ in REVIEWS]
    assert [r["expected"] for r in templated] == [s for _, _, s in REVIEWS]
    assert [r["text"] for r in templated] == [r["text"] for r in by_hand]
    assert [r["prompt_tokens"] for r in templated] == [
        len(f"Review: {t}\nSentiment:".encode()) + 1 for _, t, _ in REVIEWS]


def test_double_braces_in_a_template_reach_the_engine_as_single_braces(tmp_path):
    templated = run_fake(tmp_path, str(write_reviews(tmp_path / "reviews.csv")),
                         "--template", '{{"review": "{text}"}}')
    by_hand = run_fake(tmp_path, str(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": '{"review": "' + t + '"}'} for _, t, _ in REVIEWS])))
    assert [r["text"] for r in templated] == [r["text"] for r in by_hand]


def test_system_makes_each_row_the_chat_hand_written_messages_make(tmp_path):
    templated = run_fake(tmp_path, str(write_reviews(tmp_path / "reviews.csv")),
                         "--template", "Review: {text}", "--system", "Answer in one word.")
    by_hand = run_fake(tmp_path, str(write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "Answer in one word."},
                      {"role": "user", "content": f"Review: {t}"}]} for _, t, _ in REVIEWS])))
    plain = run_fake(tmp_path, str(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": f"Review: {t}"} for _, t, _ in REVIEWS])))
    assert [r["text"] for r in templated] == [r["text"] for r in by_hand]
    assert [r["text"] for r in templated] != [r["text"] for r in plain]


def test_a_jsonl_line_missing_a_template_field_is_an_error_row_naming_it(tmp_path):
    rows = run_fake(tmp_path, str(write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "text": "fine"}, {"id": "b", "review": "no text field"}])),
        "--template", "Review: {text}")
    assert [(r["custom_id"], r["error_code"]) for r in rows] == [("a", None),
                                                                ("b", "missing_prompt")]
    assert "template field 'text' is missing from the row" in rows[1]["error_message"]


def test_a_template_field_not_in_the_csv_header_exits_2_naming_it_and_the_columns(tmp_path):
    out = inferq("--results", str(tmp_path / "results"), "run", "generate",
                 str(write_reviews(tmp_path / "reviews.csv")), "--model", "demo",
                 "--template", "{review}", env=FAKE)
    assert out.returncode == 2
    assert "template field 'review' is not a column; the columns are 'id', 'text', " \
        "'sentiment'" in err(out)
    assert "Traceback" not in err(out)


def test_a_template_with_an_unbalanced_brace_exits_2_naming_the_template(tmp_path):
    out = inferq("--results", str(tmp_path / "results"), "run", "generate",
                 str(write_reviews(tmp_path / "reviews.csv")), "--model", "demo",
                 "--template", "Review: {text", env=FAKE)
    assert out.returncode == 2
    assert "template" in err(out) and "{{ or }}" in err(out)


# -- standard input and output ------------------------------------------------------------


def test_run_reads_standard_input_as_jsonl_by_its_first_byte(tmp_path):
    data = "".join(json.dumps({"custom_id": f"s{i}", "prompt": f"p{i}"}) + "\n"
                   for i in range(5)).encode()
    rows = run_fake(tmp_path, "-", stdin=data)
    assert [r["custom_id"] for r in rows] == [f"s{i}" for i in range(5)]
    assert list((tmp_path / "results" / ".incoming").iterdir()) == []  # the spool is gone


def test_run_reads_a_csv_from_standard_input_with_format_csv(tmp_path):
    data = write_reviews(tmp_path / "reviews.csv").read_bytes()
    rows = run_fake(tmp_path, "-", "--format", "csv", "--template", "{text}", stdin=data)
    assert [r["custom_id"] for r in rows] == [i for i, _, _ in REVIEWS]


def test_a_parquet_on_standard_input_is_found_by_its_magic_bytes(tmp_path):
    sink = io.BytesIO()
    pq.write_table(pa.table({"custom_id": ["a", "b"], "prompt": ["x", "y"]}), sink)
    rows = run_fake(tmp_path, "-", stdin=sink.getvalue())
    assert [r["custom_id"] for r in rows] == ["a", "b"]


def test_a_csv_on_standard_input_without_format_exits_2_asking_for_it(tmp_path):
    out = inferq("--results", str(tmp_path / "results"), "run", "generate", "-",
                 "--model", "demo", stdin=write_reviews(tmp_path / "r.csv").read_bytes(),
                 env=FAKE)
    assert out.returncode == 2
    assert "stdin: standard input starts with neither a JSON object nor Parquet" in err(out)
    assert "--format csv" in err(out)


def test_standard_input_over_the_input_size_limit_exits_2(tmp_path):
    out = inferq("--results", str(tmp_path / "results"), "run", "generate", "-",
                 "--model", "demo", stdin=b'{"prompt": "x"}\n' * 100,
                 env=FAKE | {"INFERQ_MAX_INPUT_BYTES": "1000"})
    assert out.returncode == 2
    assert "stdin: more than 1,000 bytes; the limit is 1,000 bytes a job" in err(out)


def test_run_to_a_jsonl_file_writes_the_results_in_one_command_like_run_batch(tmp_path):
    requests = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": f"q{i}", "method": "POST", "url": "/v1/completions",
         "body": {"prompt": f"Question {i}?"}} for i in range(4)])
    out = inferq("--results", str(tmp_path / "results"), "run", "generate", str(requests),
                 "--model", "demo", "--max-tokens", "4", "--to", str(tmp_path / "out.jsonl"),
                 "--openai", env=FAKE)
    assert out.returncode == 0, err(out)
    lines = jsonl((tmp_path / "out.jsonl").read_bytes())
    assert [line["custom_id"] for line in lines] == [f"q{i}" for i in range(4)]
    assert all(line["response"]["status_code"] == 200 for line in lines)
    assert f"4 rows written to {tmp_path / 'out.jsonl'}" in out.stdout.decode()
    assert "completed: 4 completed, 0 failed" in out.stdout.decode()


def test_run_to_standard_output_keeps_its_summary_off_stdout(tmp_path):
    out = inferq("--results", str(tmp_path / "results"), "run", "generate",
                 str(write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])), "--model", "demo",
                 "--to", "-", "--json", env=FAKE)
    assert out.returncode == 0, err(out)
    (row,) = jsonl(out.stdout)
    assert row["custom_id"] == "0"
    assert '"state": "completed"' in err(out)


# -- against Redis and a worker -----------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    url: str
    results: Path
    tmp: Path
    job: str  #: the templated reviews, classified

    def inferq(self, *args: str, stdin: bytes | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        return inferq("--broker-url", self.url, "--results", str(self.results), *args,
                      stdin=stdin, cwd=cwd)

    def keys(self) -> list[bytes]:
        client = redis.Redis.from_url(self.url)
        try:
            return sorted(k for k in client.keys("*") if not k.startswith(b"inferq:worker"))
        finally:
            client.close()


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    from tests.processes import RedisServer, Worker

    base = tmp_path_factory.mktemp("shell")
    server = RedisServer(base / "redis")
    results = base / "results"
    worker = Worker(server.url, str(results), "w-shell", base, backends="fake",
                    fake_models="demo")
    try:
        worker.start()
        q = Queue(server.url, results, base, "")
        data = write_reviews(base / "reviews.csv").read_bytes()
        out = q.inferq("submit", "classify", "-", "--format", "csv", "--model", "demo",
                       "--labels", "positive,negative", "--template", TEMPLATE,
                       "--id-column", "id", "--expected-column", "sentiment", "--wait",
                       stdin=data)
        assert out.returncode == 0, err(out)
        yield Queue(server.url, results, base, out.stdout.split()[0].decode())
    finally:
        worker.stop()
        server.stop()


@pytest.mark.slow
def test_submit_reads_a_piped_csv_through_a_template_and_records_no_input_path(queue):
    rows = jsonl(queue.inferq("results", queue.job, "--to", "-").stdout)
    assert [(r["custom_id"], r["expected"]) for r in rows] == [(i, s) for i, _, s in REVIEWS]
    assert all(r["label"] in ("positive", "negative") for r in rows)
    spec = json.loads((queue.results / "jobs" / queue.job / "spec.json").read_text())
    assert (spec["input"], spec["input_path"], spec["format"]) == ("stdin", None, "csv")
    assert spec["mapping"] == {"template": "Review: {text}\nSentiment:", "id_column": "id",
                               "expected_column": "sentiment"}
    assert list((queue.results / ".incoming").iterdir()) == []


@pytest.mark.slow
def test_results_to_dash_writes_only_rows_on_stdout_counts_on_stderr_and_exits_0(queue):
    out = queue.inferq("results", queue.job, "--to", "-", cwd=queue.tmp)
    assert out.returncode == 0, err(out)
    assert len(jsonl(out.stdout)) == len(REVIEWS)
    assert err(out).strip() == f"{len(REVIEWS)} rows written to standard output"
    assert not (queue.tmp / "-").exists()
    openai = queue.inferq("results", queue.job, "--to", "-", "--openai")
    assert openai.returncode == 0, err(openai)
    assert [line["custom_id"] for line in jsonl(openai.stdout)] == [i for i, _, _ in REVIEWS]


@pytest.mark.slow
def test_the_export_format_follows_the_file_name_or_format(queue):
    expected = [i for i, _, _ in REVIEWS]
    for name in ("out.parquet", "out.csv", "out.jsonl"):
        out = queue.inferq("results", queue.job, "--to", str(queue.tmp / name))
        assert out.returncode == 0, err(out)
    assert pq.read_table(queue.tmp / "out.parquet").column("custom_id").to_pylist() == expected
    with open(queue.tmp / "out.csv", newline="") as f:
        assert [r["custom_id"] for r in csv.DictReader(f)] == expected
    assert [r["custom_id"] for r in jsonl((queue.tmp / "out.jsonl").read_bytes())] == expected
    piped = queue.inferq("results", queue.job, "--to", "-", "--format", "parquet")
    assert piped.returncode == 0, err(piped)
    table = pq.read_table(pa.BufferReader(piped.stdout))
    assert table.column("custom_id").to_pylist() == expected
    named = queue.inferq("results", queue.job, "--to", str(queue.tmp / "rows.txt"),
                         "--format", "csv")
    assert named.returncode == 0 and (queue.tmp / "rows.txt").read_text().startswith('"job_id"')


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (("--to", "out.xlsx"), "out.xlsx: suffix '.xlsx' names no export format"),
    (("--to", "out"), "out: no suffix names no export format"),
    (("--to", "out.csv", "--openai"), "--openai writes JSON lines, not csv"),
    (("--to", "-", "--format", "parquet", "--openai"), "--openai writes JSON lines, not parquet"),
    (("--format", "csv"), "--format chooses the export format: use it with --to"),
])
def test_an_export_that_names_no_usable_format_exits_2_and_writes_nothing(queue, args,
                                                                           message):
    out = queue.inferq("results", queue.job, *args, cwd=queue.tmp)
    assert out.returncode == 2
    assert message in err(out) and out.stdout == b""
    assert not (queue.tmp / "out.xlsx").exists() and not (queue.tmp / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "content", "args", "message"), [
    ("bad.jsonl", b'{"prompt": "a"}\nnot json\n', (), "bad.jsonl, line 2: not JSON"),
    ("dup.jsonl", b'{"custom_id": "a", "prompt": "x"}\n{"custom_id": "a", "prompt": "y"}\n',
     (), "custom_id 'a' at row 1 appears earlier"),
    ("plain.csv", b"id,text\n1,hello\n", (), "e.g. --template '{text}'"),
    ("plain.csv", b"id,text\n1,hello\n", ("--template", "{body}"), "template field 'body'"),
    ("in.jsonl", b'{"prompt": "a"}\n', ("--template", "{a"), "template"),
])
def test_a_refused_submission_exits_2_and_leaves_no_job_and_no_key(queue, name, content,
                                                                    args, message):
    before = queue.keys()
    path = queue.tmp / name
    path.write_bytes(content)
    out = queue.inferq("submit", "generate", str(path), "--model", "demo", *args)
    assert out.returncode == 2
    assert message in err(out) and "Traceback" not in err(out)
    assert queue.keys() == before  # no job hash, no chunk input, no queue message
    listed = json.loads(queue.inferq("jobs", "--json").stdout)
    assert [j["job_id"] for j in listed] == [queue.job]


@pytest.mark.slow
def test_a_piped_csv_without_format_is_refused_before_anything_is_created(queue):
    before = queue.keys()
    out = queue.inferq("submit", "classify", "-", "--model", "demo",
                       stdin=write_reviews(queue.tmp / "r.csv").read_bytes())
    assert out.returncode == 2 and "--format csv" in err(out)
    assert queue.keys() == before


@pytest.mark.slow
def test_an_input_is_validated_before_asking_whether_a_worker_serves_it(queue):
    path = queue.tmp / "bad.jsonl"
    path.write_bytes(b"not json\n")
    out = queue.inferq("submit", "generate", str(path), "--model", "absent")
    assert out.returncode == 2
    assert "bad.jsonl, line 1: not JSON" in err(out) and "no live worker" not in err(out)


# -- broker URLs --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("jobs",), ("status", "job-1"), ("worker", "--dry-run")])
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "localhost:6379", "amqp://h/"])
def test_a_broker_url_that_is_not_redis_is_one_line_and_exit_2(tmp_path, command, url):
    out = inferq("--broker-url", url, "--results", str(tmp_path), *command)
    assert out.returncode == 2, err(out)
    lines = err(out).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err(out)
    assert lines[0].startswith("inferq: ") and "redis://" in lines[0]


# -- the README's shell habits, exactly as written ----------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
README_MODEL = "qwen3-1.7b-q8_0"


def readme_block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start:section.index("```\n", start)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jq") is None, reason="the README's pipe uses jq")
def test_the_readmes_columns_pipes_and_stdout_commands_run_as_written(redis_url, tmp_path,
                                                                       start_worker):
    results = tmp_path / "results"
    start_worker("w-readme", str(results), backends="fake", fake_models=README_MODEL)
    with gzip.open(tmp_path / "reviews.csv.gz", "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "sentiment"])
        writer.writerows(REVIEWS)
    write_jsonl(tmp_path / "requests.jsonl", [
        {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": f"Question {i}?"}]}}
        for i in range(3)])
    env = CLEAN_ENV | {"INFERQ_BROKER_URL": redis_url, "INFERQ_RESULTS": str(results),
                       "INFERQ_BACKENDS": "fake", "INFERQ_FAKE_MODELS": README_MODEL,
                       "PATH": f"{Path(INFERQ).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c",
                          readme_block("### Columns, pipes and standard output")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = {m[2]: int(m[1]) for m in re.finditer(r"^\s*(\d+) (\w+)$", out.stdout, re.M)}
    assert set(counts) <= {"positive", "negative"} and sum(counts.values()) == len(REVIEWS)
    labels = pq.read_table(tmp_path / "labels.parquet")
    assert labels.column("custom_id").to_pylist() == [i for i, _, _ in REVIEWS]
    assert labels.column("expected").to_pylist() == [s for _, _, s in REVIEWS]
    lines = jsonl((tmp_path / "out.jsonl").read_bytes())
    assert [line["custom_id"] for line in lines] == ["q0", "q1", "q2"]
    jobs = json.loads(subprocess.run([INFERQ, "jobs", "--json"], env=env, capture_output=True,
                                     text=True, timeout=60, check=True).stdout)
    assert [j["state"] for j in jobs] == ["completed", "completed"]


@pytest.mark.slow
def test_reconcile_rereads_a_templated_input_as_submission_read_it(queue):
    from jobs.redis_store import RedisJobStore

    path = write_reviews(queue.tmp / "later.csv")
    out = queue.inferq("submit", "generate", str(path), "--model", "nobody-serves",
                       "--queue-anyway", "--template", "Review: {text}", "--system", "Be brief.")
    job = out.stdout.split()[0].decode()
    client = redis.Redis.from_url(queue.url)
    client.delete(*client.keys(f"inferq:job:{job}*"), "inferq.model.nobody-serves")
    client.zrem("inferq:jobs", job)  # Redis lost the job: only spec.json is left
    done = queue.inferq("reconcile", job)
    assert done.returncode == 0, err(done)
    store = RedisJobStore(client, results_root=str(queue.results))  # inputs under results
    (rows,) = [store.get_chunk_input(job, 0)]
    assert [r.custom_id for r in rows] == [i for i, _, _ in REVIEWS]
    assert [[m.content for m in r.messages] for r in rows] == [
        ["Be brief.", f"Review: {t}"] for _, t, _ in REVIEWS]


@pytest.mark.slow
def test_a_suite_maps_a_csv_dataset_by_its_template_and_expected_column(queue):
    write_reviews(queue.tmp / "reviews.csv")
    suites = queue.tmp / "evals.toml"
    suites.write_text(
        '[suites.reviews]\nmodels = ["demo"]\ndataset = "reviews.csv"\nop = "classify"\n'
        'labels = ["positive", "negative"]\nscorer = "label"\n'
        'template = "Review: {text}\\nSentiment:"\nid_column = "id"\n'
        'expected_column = "sentiment"\n')
    out = queue.inferq("eval", "run", "reviews", "--suites", str(suites), "--wait")
    assert out.returncode == 0, err(out)
    job = out.stdout.split()[0].decode()
    rows = jsonl(queue.inferq("results", job, "--to", "-").stdout)
    assert [(r["custom_id"], r["expected"]) for r in rows] == [(i, s) for i, _, s in REVIEWS]
    assert [r["prompt_tokens"] for r in rows] == [
        len(f"Review: {t}\nSentiment:".encode()) + 1 for _, t, _ in REVIEWS]


def test_a_suite_template_naming_a_missing_column_is_refused_with_its_line(tmp_path):
    from jobs.suites import SuiteError, load_suites

    write_reviews(tmp_path / "reviews.csv")
    path = tmp_path / "evals.toml"
    path.write_text('[suites.reviews]\nmodels = ["demo"]\ndataset = "reviews.csv"\n'
                    'scorer = "label"\nlabels = ["positive", "negative"]\n'
                    'template = "{review}"\nexpected_column = "sentiment"\n')
    with pytest.raises(SuiteError) as e:
        load_suites(str(path))
    assert "line 3" in str(e.value)  # the dataset's line
    assert "template field 'review' is not a column" in str(e.value)


def test_standard_output_closed_by_its_reader_ends_quietly(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(2000)])
    out = subprocess.run(f"{INFERQ} --results {tmp_path / 'r'} run generate {path} --model demo "
                         "--max-tokens 64 --to - | head -1", shell=True, capture_output=True,
                         env=CLEAN_ENV | FAKE, timeout=300, executable="/bin/bash")
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 1
    assert b"Traceback" not in out.stderr and b"BrokenPipe" not in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jq") is None, reason="the doc's pipe uses jq")
def test_the_analytics_docs_shell_exports_run_as_written(queue):
    doc = README.parent / "docs" / "analytics.md"
    text = doc.read_text(encoding="utf-8")
    section = text[text.index("## 8. One job's rows from the shell"):]
    block = section[section.index("```sh\n") + 6:section.index("```\n", section.index("```sh"))]
    env = CLEAN_ENV | {"INFERQ_BROKER_URL": queue.url, "INFERQ_RESULTS": str(queue.results),
                       "JOB": queue.job, "PATH": f"{Path(INFERQ).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=queue.tmp, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    first = [json.loads(line) for line in out.stdout.splitlines()[:3]]
    assert first == [{"custom_id": i, "label": first[n]["label"], "expected": s}
                     for n, (i, _, s) in enumerate(REVIEWS[:3])]
    assert out.stdout.splitlines()[3:] == [f"4 rows written to {queue.job}.parquet"]
    assert out.stderr.splitlines()[-1] == "0 rows written to standard output"  # no errors
    with open(queue.tmp / f"{queue.job}.csv", newline="") as f:
        assert [r["custom_id"] for r in csv.DictReader(f)] == [i for i, _, _ in REVIEWS]
    assert pq.read_table(queue.tmp / f"{queue.job}.parquet").num_rows == len(REVIEWS)
