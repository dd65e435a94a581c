"""`inferq serve` speaks the OpenAI Batch API: driven by the official `openai` SDK
against a real `inferq serve` process, a real redis-server and a real worker on the
fake backend. Files in, batches run, output and error files out, across a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis as redis_lib

from tests.faults import check_job
from worker.local import Server

INFERQ = str(Path(sys.executable).parent / "inferq")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
KEY = "sk-test-one"
LIMIT_BYTES = 64 * 1024
LIMIT_LINES = 500

pytestmark = pytest.mark.slow


def new_server(redis_url: str, results: Path, log: Path, port: int) -> Server:
    """``inferq serve`` with this module's keys, chunk size and upload limits."""
    return Server(redis_url, str(results), log, port=port,
                       api_keys=f"{KEY},sk-test-two", batch_chunk_size="4",
                       max_upload_bytes=str(LIMIT_BYTES), max_upload_lines=str(LIMIT_LINES),
                       sweep_seconds="0.5")


@dataclass
class Env:
    redis_url: str
    results: Path
    tmp: Path
    server: Server
    client: openai.OpenAI


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from tests.processes import RedisServer, Worker, free_port

    base = tmp_path_factory.mktemp("serve")
    redis = RedisServer(base / "redis")
    results = base / "results"
    worker = Worker(redis.url, str(results), "w-serve", base, backends="fake",
                    fake_models="demo")
    server = new_server(redis.url, results, base / "serve.log", free_port())
    try:
        worker.start()
        server.start()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0,
                               timeout=30)
        yield Env(redis.url, results, base, server, client)
    finally:
        server.stop()
        worker.stop()
        redis.stop()


def write_batch(path: Path, bodies: list[dict], url: str = "/v1/completions") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, body in enumerate(bodies):
            f.write(json.dumps({"custom_id": f"r-{i:03d}", "method": "POST", "url": url,
                                "body": body}) + "\n")
    return path


def upload(env: Env, path: Path) -> str:
    with open(path, "rb") as f:
        return env.client.files.create(file=f, purpose="batch").id


def wait_batch(env: Env, batch_id: str, until: tuple[str, ...] = (
        "completed", "failed", "expired", "cancelled"), timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        batch = env.client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"{batch_id} still {batch.status} after {timeout}s")
        time.sleep(0.2)


def lines(env: Env, file_id: str) -> list[dict]:
    text = env.client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines()]


def test_a_completions_batch_runs_through_the_sdk_to_output_and_error_files(env):
    prompts = [f"Review {i}: fine." for i in range(10)]
    prompts[6] = ""  # an error row: empty prompt
    path = write_batch(env.tmp / "completions.jsonl",
                       [{"model": "demo", "prompt": p, "max_tokens": 4} for p in prompts])
    file_id = upload(env, path)
    assert env.client.files.retrieve(file_id).bytes == path.stat().st_size
    created = env.client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                        completion_window="24h", metadata={"run": "one"})
    assert created.status in ("validating", "in_progress", "finalizing", "completed")
    assert created.id.startswith("batch_") and created.metadata == {"run": "one"}
    batch = wait_batch(env, created.id)
    assert batch.status == "completed", batch
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (10, 9, 1)
    assert batch.model == "demo" and batch.input_file_id == file_id
    assert batch.created_at <= batch.in_progress_at <= batch.completed_at
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    output = lines(env, batch.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"r-{i:03d}" for i in range(10) if i != 6]
    body = output[0]["response"]["body"]
    assert output[0]["response"]["status_code"] == 200 and output[0]["error"] is None
    assert body["object"] == "text_completion" and isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["total_tokens"] == (body["usage"]["prompt_tokens"]
                                             + body["usage"]["completion_tokens"])
    errors = lines(env, batch.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("r-006", "empty_prompt")]
    assert env.client.files.retrieve(batch.output_file_id).purpose == "batch_output"


def test_a_chat_batch_answers_chat_completion_bodies_and_the_cli_exports_the_same(env):
    path = write_batch(env.tmp / "chat.jsonl",
                       [{"model": "demo", "messages": [{"role": "user", "content": f"Hi {i}"}],
                         "max_completion_tokens": 3, "temperature": 0}
                        for i in range(5)], url="/v1/chat/completions")
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/chat/completions",
                                        completion_window="24h")
    batch = wait_batch(env, created.id)
    assert batch.status == "completed" and batch.error_file_id is None
    output = lines(env, batch.output_file_id)
    body = output[0]["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] <= 3
    dest = env.tmp / "cli-chat.jsonl"
    out = subprocess.run([INFERQ, "--broker-url", env.redis_url, "--results", str(env.results),
                          "results", batch.id.removeprefix("batch_"), "--to", str(dest),
                          "--openai"], capture_output=True, text=True, env=CLEAN_ENV,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    cli = [json.loads(line) for line in dest.read_text().splitlines()]
    assert sorted(cli, key=lambda o: o["custom_id"]) == sorted(output,
                                                               key=lambda o: o["custom_id"])
    status = subprocess.run([INFERQ, "--broker-url", env.redis_url, "--results",
                             str(env.results), "status", batch.id.removeprefix("batch_"),
                             "--json"], capture_output=True, text=True, env=CLEAN_ENV,
                            timeout=60)
    assert json.loads(status.stdout)["state"] == "completed"  # an ordinary job


def test_a_batch_with_every_sampling_parameter_completes_and_max_tokens_bounds_each_line(env):
    body = {"model": "demo", "max_tokens": 2, "temperature": 0.5, "top_p": 0.9,
            "stop": "\n\n", "seed": 7, "n": 1, "stream": False, "user": "me"}
    path = write_batch(env.tmp / "params.jsonl", [body | {"prompt": f"p{i}"} for i in range(4)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    batch = wait_batch(env, created.id)
    assert batch.status == "completed" and batch.error_file_id is None
    output = lines(env, batch.output_file_id)
    assert len(output) == 4  # per-line parameters: tests/test_request_params.py
    for line in output:
        assert line["response"]["body"]["usage"]["completion_tokens"] <= 2


def test_a_batch_with_labels_classifies_and_reports_every_label_probability(env):
    path = write_batch(env.tmp / "classify.jsonl",
                       [{"model": "demo", "prompt": f"Review {i}", "labels": ["pos", "neg"]}
                        for i in range(4)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    batch = wait_batch(env, created.id)
    assert batch.status == "completed"
    for line in lines(env, batch.output_file_id):
        choice = line["response"]["body"]["choices"][0]
        assert choice["text"] in ("pos", "neg")
        assert set(choice["label_probs"]) == {"pos", "neg"}
        assert abs(sum(choice["label_probs"].values()) - 1) < 1e-6


def test_a_batch_calibrates_its_labels_as_its_lines_ask_and_refuses_a_line_that_differs(env):
    bodies = [{"model": "demo", "prompt": f"Review {i}: fine.", "labels": ["pos", "neg"],
               "calibrate": "batch"} for i in range(8)]
    bodies[5]["calibrate"] = "length"
    path = write_batch(env.tmp / "calibrated.jsonl", bodies)
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    batch = wait_batch(env, created.id)
    assert batch.status == "completed"
    output = lines(env, batch.output_file_id)
    assert len(output) == 7
    for line in output:
        choice = line["response"]["body"]["choices"][0]
        assert choice["calibration"] == "batch"
        assert set(choice["raw_label_probs"]) == set(choice["label_probs"]) == {"pos", "neg"}
        assert choice["text"] == max(choice["label_probs"], key=choice["label_probs"].get)
    # each line's probabilities divided by the batch's mean per label, renormalised
    raws = [line["response"]["body"]["choices"][0]["raw_label_probs"] for line in output]
    means = {k: sum(r[k] for r in raws) / len(raws) for k in ("pos", "neg")}
    for line, raw in zip(output, raws, strict=True):
        weights = {k: raw[k] / means[k] for k in raw}
        calibrated = line["response"]["body"]["choices"][0]["label_probs"]
        assert calibrated["pos"] == pytest.approx(weights["pos"] / sum(weights.values()))
    [error] = lines(env, batch.error_file_id)
    assert error["custom_id"] == "r-005" and error["error"]["code"] == "invalid_parameter"
    assert "calibrate='length' differs from the job's calibration, 'batch'" in \
        error["error"]["message"]


def test_a_wrong_or_missing_key_is_401_in_openais_error_shape(env):
    wrong = openai.OpenAI(base_url=f"{env.server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.files.list()
    assert raised.value.status_code == 401
    assert raised.value.body["code"] == "invalid_api_key"
    request = urllib.request.Request(f"{env.server.url}/v1/batches")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=5)
    assert missing.value.code == 401
    error = json.loads(missing.value.read())["error"]
    assert error["code"] == "missing_api_key" and error["type"] == "invalid_request_error"
    second = openai.OpenAI(base_url=f"{env.server.url}/v1", api_key="sk-test-two",
                           max_retries=0)
    assert second.models.list().data[0].id == "demo"


def test_batches_list_newest_first_with_after_and_limit(env):
    path = write_batch(env.tmp / "few.jsonl", [{"model": "demo", "prompt": "x"}])
    file_id = upload(env, path)
    made = [env.client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                      completion_window="24h").id for _ in range(3)]
    first = env.client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    rest = env.client.batches.list(limit=2, after=first.data[-1].id)
    assert rest.data[0].id == made[0]
    every = [b.id for b in env.client.batches.list(limit=2)]  # the SDK pages with after
    assert every[:3] == made[::-1] and len(every) == len(set(every))


def test_the_sdk_pages_through_every_batch_and_file_exactly_once_newest_first(env):
    path = write_batch(env.tmp / "paged.jsonl", [{"model": "demo", "prompt": "x"}])
    uploaded = [upload(env, path) for _ in range(5)]
    made = [env.client.batches.create(input_file_id=uploaded[0], endpoint="/v1/completions",
                                      completion_window="24h").id for _ in range(5)]
    every = [b.id for b in env.client.batches.list(limit=2)]
    assert len(every) == len(set(every)) and every[:5] == made[::-1]
    by_time = [b.created_at for b in env.client.batches.list(limit=3)]
    assert by_time == sorted(by_time, reverse=True)
    files = [f.id for f in env.client.files.list(limit=2, purpose="batch")]
    assert len(files) == len(set(files)) and files[:5] == uploaded[::-1]
    page = env.client.files.list(limit=2, after=uploaded[3])
    assert [f.id for f in page.data] == uploaded[2::-1][:2] and page.has_more
    with pytest.raises(openai.BadRequestError):
        env.client.files.list(limit=0)


def test_cancel_stops_a_running_batch_and_keeps_its_finished_rows(env):
    path = write_batch(env.tmp / "slow.jsonl",
                       [{"model": "demo", "prompt": f"@@slow:0.4@@ {i}"} for i in range(24)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    wait_batch(env, created.id, until=("in_progress",))
    cancelling = env.client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait_batch(env, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at >= batch.cancelling_at
    assert batch.request_counts.completed < 24
    assert env.client.batches.cancel(created.id).status == "cancelled"  # ended: as it was


def test_a_malformed_file_fails_validation_with_errors_naming_each_line(env):
    path = env.tmp / "bad.jsonl"
    good = {"custom_id": "a", "method": "POST", "url": "/v1/completions",
            "body": {"model": "demo", "prompt": "hi"}}
    path.write_text("\n".join([
        json.dumps(good),
        "{not json",
        json.dumps(good | {"custom_id": "b", "body": {"model": "other", "prompt": "x"}}),
        json.dumps(good | {"custom_id": "d", "body": {"model": "demo", "prompt": "x",
                                                      "max_tokens": 9}}),
        json.dumps(good),
    ]) + "\n")
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    assert created.status == "validating" and created.errors is None
    batch = wait_batch(env, created.id)
    assert batch.status == "failed" and batch.failed_at
    found = {(e.line, e.code) for e in batch.errors.data}
    # (lines 3 and 4, another model and other parameters, are per-line matters now)
    assert {(2, "invalid_json"), (5, "duplicate_custom_id")} <= found
    assert env.client.batches.retrieve(batch.id).errors.data[0].line == 2


def test_a_line_asking_for_what_inferq_cannot_honour_is_an_error_line_and_the_rest_runs(env):
    bodies = [{"model": "demo", "prompt": f"p{i}", "max_tokens": 3} for i in range(6)]
    bodies[1] |= {"logprobs": True, "top_logprobs": 2}
    bodies[4] |= {"tools": [{"type": "function"}]}
    path = write_batch(env.tmp / "refused.jsonl", bodies)
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    batch = wait_batch(env, created.id)
    assert batch.status == "completed" and batch.errors is None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (6, 4, 2)
    errors = {e["custom_id"]: e["error"] for e in lines(env, batch.error_file_id)}
    assert set(errors) == {"r-001", "r-004"}
    assert {e["code"] for e in errors.values()} == {"unsupported_parameter"}
    assert "logprobs" in errors["r-001"]["message"] and "tools" in errors["r-004"]["message"]
    assert len(lines(env, batch.output_file_id)) == 4
    dest = env.tmp / "cli-refused.jsonl"
    out = subprocess.run([INFERQ, "--broker-url", env.redis_url, "--results", str(env.results),
                          "results", batch.id.removeprefix("batch_"), "--to", str(dest),
                          "--openai", "--errors"], capture_output=True, text=True,
                         env=CLEAN_ENV, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {json.loads(line)["custom_id"]: json.loads(line)["error"]
            for line in dest.read_text().splitlines()} == errors


def test_a_model_no_worker_serves_fails_the_batch_with_model_not_found(env):
    path = write_batch(env.tmp / "nomodel.jsonl", [{"model": "nobody-serves", "prompt": "x"}])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    batch = wait_batch(env, created.id)
    assert batch.status == "failed"
    assert [e.code for e in batch.errors.data] == ["model_not_found"]


def test_a_server_killed_mid_batch_restarts_and_the_batch_completes_readable(env):
    path = write_batch(env.tmp / "restart.jsonl",
                       [{"model": "demo", "prompt": f"@@slow:0.2@@ {i}"} for i in range(16)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    wait_batch(env, created.id, until=("in_progress",))
    env.server.kill()
    with pytest.raises(openai.APIConnectionError):
        env.client.batches.retrieve(created.id)
    env.server.start()
    batch = wait_batch(env, created.id)
    assert batch.status == "completed" and batch.request_counts.completed == 16
    assert len(lines(env, batch.output_file_id)) == 16
    env.server.kill()
    env.server.start()
    again = env.client.batches.retrieve(created.id)
    assert again.output_file_id == batch.output_file_id
    assert len(lines(env, again.output_file_id)) == 16


def test_rows_not_done_within_the_completion_window_end_as_batch_expired(env):
    path = write_batch(env.tmp / "expire.jsonl",
                       [{"model": "demo", "prompt": f"@@slow:0.5@@ {i}"} for i in range(12)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="1s")
    batch = wait_batch(env, created.id)
    assert batch.status == "expired" and batch.expired_at
    assert batch.expires_at == batch.created_at + 1
    errors = lines(env, batch.error_file_id)
    assert errors and {e["error"]["code"] for e in errors} == {"batch_expired"}
    done = lines(env, batch.output_file_id) if batch.output_file_id else []
    assert len(done) + len(errors) == 12 and len(done) == batch.request_counts.completed


def ids_in(env: Env, batch) -> list[str]:
    """Every custom_id of a batch's output and error files, repeats kept."""
    return [line["custom_id"] for file_id in (batch.output_file_id, batch.error_file_id)
            if file_id for line in lines(env, file_id)]


def test_a_batch_whose_only_worker_died_before_running_it_expires_on_time(env):
    from tests.processes import Worker, free_port

    path = write_batch(env.tmp / "ghost.jsonl",
                       [{"model": "ghost", "prompt": f"p{i}"} for i in range(10)])
    file_id = upload(env, path)
    other = new_server(env.redis_url, env.results, env.tmp / "serve-sweep.log",
                       free_port()).start()  # a second server sweeping the same Redis
    ghost = Worker(env.redis_url, str(env.results), "w-ghost", env.tmp, backends="fake",
                   fake_models="ghost").start()
    ghost.kill()  # SIGKILL: its advertisement lives a few seconds more, nothing consumes
    try:
        created = env.client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                            completion_window="2s")
        assert created.status in ("validating", "in_progress")
        batch = wait_batch(env, created.id, timeout=30)
    finally:
        other.stop()
        ghost.stop()
    assert batch.status == "expired" and batch.expired_at >= batch.expires_at
    assert batch.output_file_id is None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (10, 0, 10)
    errors = lines(env, batch.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == [f"r-{i:03d}" for i in range(10)]
    assert {(e["error"]["code"], e["response"]) for e in errors} == {("batch_expired", None)}
    check_job(env.redis_url, env.results, batch.id.removeprefix("batch_"),
              [f"r-{i:03d}" for i in range(10)], max_attempts=3)


def test_a_batch_whose_worker_stopped_midway_expires_keeping_its_finished_rows(env):
    from tests.processes import Worker

    path = write_batch(env.tmp / "half.jsonl",
                       [{"model": "half", "prompt": f"@@slow:0.15@@ {i}"} for i in range(40)])
    file_id = upload(env, path)
    worker = Worker(env.redis_url, str(env.results), "w-half", env.tmp, backends="fake",
                    fake_models="half").start()
    try:
        created = env.client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                            completion_window="6s")
        deadline = time.monotonic() + 30
        while env.client.batches.retrieve(created.id).request_counts.completed < 8:
            assert time.monotonic() < deadline, "no chunk finished in 30 s"
            time.sleep(0.1)
    finally:
        worker.stop()  # warm: it finishes the chunk it runs, then takes no other
    batch = wait_batch(env, created.id, timeout=30)
    assert batch.status == "expired"
    counts = batch.request_counts
    assert 8 <= counts.completed < 40 and counts.completed + counts.failed == 40
    output, errors = lines(env, batch.output_file_id), lines(env, batch.error_file_id)
    assert len(output) == counts.completed and len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    every = ids_in(env, batch)
    assert sorted(every) == [f"r-{i:03d}" for i in range(40)]  # each once, across both files
    check_job(env.redis_url, env.results, batch.id.removeprefix("batch_"),
              [f"r-{i:03d}" for i in range(40)], max_attempts=3)


def test_a_batch_reports_validating_until_its_job_is_queued(env):
    from jobs import keys

    path = write_batch(env.tmp / "validating.jsonl",
                       [{"model": "demo", "prompt": f"p{i}"} for i in range(8)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    assert created.status == "validating" and created.request_counts.total == 0
    assert created.expires_at == created.created_at + 24 * 3600
    client = redis_lib.Redis.from_url(env.redis_url)
    job_id = created.id.removeprefix("batch_")
    seen = {env.client.batches.retrieve(created.id).status}
    batch = wait_batch(env, created.id)
    assert batch.status == "completed" and batch.request_counts.total == 8
    assert seen <= {"validating", "in_progress", "finalizing", "completed"}
    assert not client.exists(keys.pending_batch(job_id))  # the request is dropped
    assert client.zscore(keys.VALIDATING_BATCHES, job_id) is None


def test_a_batch_left_validating_by_a_stopped_server_is_resumed_by_another(env):
    """What a server killed mid-validation leaves: the batch's request with a lease that
    ran out, and no job; or a job half-submitted. The sweep of a live server resumes the
    first and fails the second cleanly."""
    from jobs import JobSpec, keys
    from jobs.redis_store import RedisJobStore

    path = write_batch(env.tmp / "resumed.jsonl",
                       [{"model": "demo", "prompt": f"p{i}"} for i in range(6)])
    file_id = upload(env, path)
    client = redis_lib.Redis.from_url(env.redis_url)
    now = time.time()
    request = {"input_file_id": file_id, "endpoint": "/v1/completions",
               "completion_window": "24h", "metadata": {"left": "validating"},
               "created_at": now}
    resumed, half = f"job-{int(now * 1000):011x}-0000aaaa", f"job-{int(now * 1000):011x}-0000bbbb"
    for job_id in (resumed, half):
        client.hset(keys.pending_batch(job_id), "request", json.dumps(request))
        client.zadd(keys.VALIDATING_BATCHES, {job_id: now - 1})  # its lease ran out
    RedisJobStore(client).create_job(JobSpec(op="generate", model="demo", job_id=half,
                                             created_at=now, metadata={
                                                 "inferq.endpoint": "/v1/completions"}),
                                     total=0, chunks=0)  # stopped while storing chunks
    assert env.client.batches.retrieve(f"batch_{resumed}").status == "validating"
    batch = wait_batch(env, f"batch_{resumed}")
    assert batch.status == "completed" and batch.request_counts.completed == 6
    assert batch.metadata == {"left": "validating"}
    failed = wait_batch(env, f"batch_{half}")
    assert failed.status == "failed" and "create it again" in failed.errors.data[0].message
    assert client.zcard(keys.VALIDATING_BATCHES) == 0


def test_a_server_killed_while_validating_a_batch_leaves_it_to_the_next_server(env):
    from jobs import keys
    from tests.processes import free_port

    n = 100_000  # long enough to read that the kill lands while it is read
    path = write_batch(env.tmp / "long.jsonl", [{"model": "demo", "prompt": "x"}] * (n - 1))
    with open(path, "a", encoding="utf-8") as f:  # the last line repeats the first's id
        f.write(json.dumps({"custom_id": "r-000", "method": "POST", "url": "/v1/completions",
                            "body": {"model": "demo", "prompt": "x"}}) + "\n")
    server = new_server(env.redis_url, env.results, env.tmp / "serve-killed.log", free_port())
    server.env |= {"INFERQ_MAX_UPLOAD_BYTES": str(64 * 2**20),
                   "INFERQ_MAX_UPLOAD_LINES": str(n), "INFERQ_VALIDATION_LEASE_SECONDS": "2"}
    server.start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        with open(path, "rb") as f:
            file_id = client.files.create(file=f, purpose="batch").id
        created = client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                        completion_window="24h")
        server.kill()  # SIGKILL while its thread reads the file
        job_id = created.id.removeprefix("batch_")
        redis = redis_lib.Redis.from_url(env.redis_url)
        assert redis.exists(keys.pending_batch(job_id)) and not redis.exists(keys.job(job_id))
        assert env.client.batches.retrieve(created.id).status == "validating"  # any server
        server.start()  # its sweep finds the lease run out and validates again
        batch = wait_batch(env, created.id, timeout=60)
    finally:
        server.stop()
    assert batch.status == "failed"
    assert [(e.line, e.code) for e in batch.errors.data] == [(n, "duplicate_custom_id")]
    assert not redis.exists(keys.pending_batch(job_id))


def test_cancelling_a_validating_batch_cancels_it_once_its_job_exists(env):
    path = write_batch(env.tmp / "cancel-early.jsonl",
                       [{"model": "demo", "prompt": f"@@slow:0.3@@ {i}"} for i in range(40)])
    created = env.client.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
    assert env.client.batches.cancel(created.id).status in ("cancelling", "cancelled")
    batch = wait_batch(env, created.id)
    assert batch.status == "cancelled" and batch.request_counts.completed < 40


def test_two_servers_on_one_redis_answer_for_each_others_batches_and_files(env):
    from tests.processes import free_port

    other = new_server(env.redis_url, env.results, env.tmp / "serve-2.log", free_port()).start()
    try:
        second = openai.OpenAI(base_url=f"{other.url}/v1", api_key=KEY, max_retries=0)
        path = write_batch(env.tmp / "two.jsonl", [{"model": "demo", "prompt": "x"}] * 1)
        created = second.batches.create(input_file_id=upload(env, path),
                                        endpoint="/v1/completions", completion_window="24h")
        batch = wait_batch(env, created.id)
        assert batch.status == "completed"
        assert second.files.content(batch.output_file_id).text == \
            env.client.files.content(batch.output_file_id).text
    finally:
        other.stop()


def test_batches_created_at_once_from_several_threads_all_complete(env):
    from concurrent.futures import ThreadPoolExecutor

    path = write_batch(env.tmp / "many.jsonl", [{"model": "demo", "prompt": f"p{i}"}
                                                for i in range(6)])
    file_id = upload(env, path)

    def create(_: int) -> str:
        return env.client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                         completion_window="24h").id

    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(create, range(6)))
    assert len(set(made)) == 6
    for batch_id in made:
        batch = wait_batch(env, batch_id)
        assert batch.status == "completed" and batch.request_counts.completed == 6


def test_an_unknown_field_or_endpoint_or_window_is_a_400_naming_it(env):
    file_id = upload(env, write_batch(env.tmp / "one.jsonl", [{"model": "demo", "prompt": "x"}]))
    for extra, param in (({"extra_body": {"priority": 1}}, "priority"),
                         ({"endpoint": "/v1/embeddings"}, "endpoint"),
                         ({"completion_window": "forever"}, "completion_window")):
        kwargs = {"input_file_id": file_id, "endpoint": "/v1/completions",
                  "completion_window": "24h"} | extra
        with pytest.raises(openai.BadRequestError) as raised:
            env.client.batches.create(**kwargs)
        assert param in raised.value.body["message"] or raised.value.body["param"] == param


def test_files_list_retrieve_delete_and_path_like_ids(env):
    path = write_batch(env.tmp / "f.jsonl", [{"model": "demo", "prompt": "x"}])
    file_id = upload(env, path)
    assert file_id in [f.id for f in env.client.files.list(purpose="batch")]
    assert env.client.files.content(file_id).text == path.read_text()
    for bad in ("..%2F..%2Fetc%2Fpasswd", "file-..", "file-a.b", "batch_x"):
        with pytest.raises(openai.NotFoundError):
            env.client.files.retrieve(bad)
    with pytest.raises(openai.NotFoundError):
        env.client.batches.retrieve("batch_../../x")
    assert env.client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        env.client.files.retrieve(file_id)


def test_uploads_past_the_byte_or_line_limit_are_refused_and_nothing_is_kept(env):
    before = set(os.listdir(env.results / "files"))
    big = env.tmp / "big.jsonl"
    big.write_bytes(b'{"x": 1}\n' * (LIMIT_BYTES // 9 + 10))
    with pytest.raises(openai.APIStatusError) as raised:
        upload(env, big)
    assert raised.value.status_code == 413
    assert raised.value.body["code"] in ("file_too_large", "too_many_lines")
    many = env.tmp / "many.jsonl"
    many.write_bytes(b"{}\n" * (LIMIT_LINES + 1))
    with pytest.raises(openai.APIStatusError) as raised:
        upload(env, many)
    assert (raised.value.status_code, raised.value.body["code"]) == (413, "too_many_lines")
    assert set(os.listdir(env.results / "files")) == before


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_150_mb_upload_streams_to_disk_without_the_server_holding_it(env):
    import http.client

    from tests.processes import free_port

    big = new_server(env.redis_url, env.results, env.tmp / "serve-big.log", free_port())
    big.env |= {"INFERQ_MAX_UPLOAD_BYTES": str(300 * 2**20),
                "INFERQ_MAX_UPLOAD_LINES": str(10**8)}
    big.start()
    try:
        line = json.dumps({"custom_id": "x" * 40, "method": "POST", "url": "/v1/completions",
                           "body": {"model": "demo", "prompt": "y" * 400}}).encode() + b"\n"
        block, blocks = line * 2000, 150 * 2**20 // (len(line) * 2000)
        head = (b"--b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                b"batch\r\n--b0undary\r\nContent-Disposition: form-data; name=\"file\"; "
                b"filename=\"big.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n")
        tail = b"\r\n--b0undary--\r\n"

        def body():
            yield head
            for _ in range(blocks):
                yield block
            yield tail

        before = peak_rss_kib(big.process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", int(big.url.rsplit(":", 1)[1]),
                                                timeout=120)
        connection.request("POST", "/v1/files", body=body(), headers={
            "Authorization": f"Bearer {KEY}",
            "Content-Type": "multipart/form-data; boundary=b0undary",
            "Content-Length": str(len(head) + len(block) * blocks + len(tail))})
        answer = connection.getresponse()
        created = json.loads(answer.read())
        connection.close()
        assert answer.status == 200, created
        assert created["bytes"] == len(block) * blocks
        grew_mib = (peak_rss_kib(big.process.pid) - before) / 1024
        assert grew_mib < 40, f"the server's peak memory grew {grew_mib:.0f} MiB"
        env.client.files.delete(created["id"])
    finally:
        big.stop()


def test_validation_reads_a_line_over_the_limit_as_an_error_without_holding_it(tmp_path):
    from worker.server.validate import plan

    path = tmp_path / "long.jsonl"
    ok = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions",
                     "body": {"model": "demo", "prompt": "hi"}})
    path.write_text(ok + "\n" + "z" * 5000 + "\n" + ok.replace('"a"', '"b"') + "\n")
    found = plan(path, "/v1/completions", max_line_bytes=1000)
    assert [(e["line"], e["code"]) for e in found.errors] == [(2, "line_too_long")]
    assert (found.lines, found.model) == (3, "demo")


def test_serving_a_non_loopback_host_without_keys_is_refused_at_start(tmp_path):
    out = subprocess.run([INFERQ, "--broker-url", "redis://127.0.0.1:1/0", "--results",
                          str(tmp_path), "serve", "--host", "0.0.0.0"],
                         capture_output=True, text=True, env=CLEAN_ENV, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "inferq: refusing to serve on 0.0.0.0 without API keys: set INFERQ_API_KEYS "
        "(comma-separated), or serve on 127.0.0.1"]
