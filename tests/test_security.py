"""Hostile input: pickle on the queue, Redis credentials and TLS, names that are paths,
crafted GGUF files and oversized inputs. Real redis-server and worker processes where
the behaviour lives in them."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest
import redis

import inference
from inference import LoadOptions, ModelLoadError
from jobs import keys
from jobs.redis_store import RedisJobStore
from jobs.sinks import ParquetSink
from tests.processes import RedisServer, Worker
from worker.app import TASK, create_app
from worker.catalog import Catalog
from worker.config import Settings

INFERQ = str(Path(sys.executable).parent / "inferq")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
CLOSED = "redis://127.0.0.1:1/0"  # nothing listens: any use of Redis would fail loudly
PASSWORD = "Pa55-sekrit-7c1e"
WRONG = "Wr0ng-guess-93ab"

pytestmark = pytest.mark.timeout(120)


def inferq(*args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, *args], capture_output=True, text=True, timeout=timeout,
                          env=CLEAN_ENV | (env or {}))


def write_prompts(path: Path, prompts: list[str]) -> list[str]:
    ids = [f"r{i}" for i in range(len(prompts))]
    with open(path, "w", encoding="utf-8") as f:
        for custom_id, prompt in zip(ids, prompts, strict=True):
            f.write(json.dumps({"custom_id": custom_id, "prompt": prompt}) + "\n")
    return ids


def rows_of(results: Path, job_id: str) -> list[dict]:
    return ParquetSink(str(results)).read_results(job_id).to_pylist()


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def workers(tmp_path):
    """Workers started against any Redis; every one is stopped after the test."""
    started: list[Worker] = []

    def start(broker_url: str, name: str, **settings: str) -> Worker:
        worker = Worker(broker_url, str(tmp_path / "results"), name, tmp_path, **settings)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


# -- 1. pickle on the queue ----------------------------------------------------------


class _OpensAFile:
    """Unpickling this calls ``open(path, "w")``: the file appears if anyone unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_message(queue: str, payload: object, *, task_header: bool) -> tuple[str, bytes]:
    """A message as kombu's Redis transport stores it (JSON envelope, base64 body), but
    typed ``application/x-python-serialize``. Without ``task_header`` it is a protocol 1
    message, which the consumer decodes itself instead of handing to the task."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": TASK, "id": task_id, "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": task_id, "parent_id": None,
               "argsrepr": "('job-x', 0)", "kwargsrepr": "{}", "origin": "attacker",
               "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
               "stamps": {}} if task_header else {}
    envelope = {
        "body": base64.b64encode(pickle.dumps(payload)).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": headers,
        "properties": {"correlation_id": task_id, "reply_to": str(uuid.uuid4()),
                       "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())},
    }
    return task_id, json.dumps(envelope).encode()


def test_the_pickle_payload_used_below_does_create_its_file_when_unpickled(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_OpensAFile(control))).close()
    assert control.exists()


def test_the_celery_app_accepts_json_only_and_no_setting_can_change_it(tmp_path,
                                                                     monkeypatch):
    for name in ("ACCEPT_CONTENT", "TASK_SERIALIZER"):  # not settings: ignored
        monkeypatch.setenv(f"INFERQ_{name}", "pickle")
    conf = create_app(Settings.load(broker_url=CLOSED)).conf
    assert (conf.accept_content, conf.task_serializer, conf.result_serializer) == (
        ["json"], "json", "json")
    config = tmp_path / "inferq.toml"
    config.write_text('accept_content = ["pickle"]\n')
    with pytest.raises(ValueError, match="unknown setting 'accept_content'"):
        Settings.load(str(config))


@pytest.mark.slow
def test_a_pickle_message_pushed_onto_a_workers_queue_is_refused_and_the_worker_carries_on(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    worker = start_worker("w-pickle", str(results), backends="fake", fake_models="demo")
    client = redis.Redis.from_url(redis_url)
    queue = "inferq.model.demo"
    markers = [tmp_path / "pwned-v2", tmp_path / "pwned-v1"]
    sent = []
    for marker, task_header in zip(markers, (True, False), strict=True):
        task_id, raw = pickle_message(queue, _OpensAFile(marker), task_header=task_header)
        client.lpush(queue, raw)
        sent.append(task_id)
    deadline = time.monotonic() + 20
    while (client.llen(queue) or client.hlen("unacked")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a heartbeat later: counters would show a chunk that ran

    assert client.llen(queue) == 0 and client.hlen("unacked") == 0  # consumed, not stuck
    assert not any(m.exists() for m in markers)
    assert worker.process.poll() is None
    log = worker.log.read_text()
    assert log.count("untrusted content") >= 2, log
    assert not any(f"[{task_id}] received" in log for task_id in sent)
    advert = json.loads(client.get(keys.worker("w-pickle")))
    assert advert["counters"]["chunks"] == 0 and advert["counters"]["rows"] == 0

    path = tmp_path / "in.jsonl"
    ids = write_prompts(path, [f"row {i}" for i in range(6)])
    out = inferq("--broker-url", redis_url, "--results", str(results), "submit", "classify",
                 str(path), "--model", "demo", "--job-id", "after-pickle", "--wait")
    assert out.returncode == 0, out.stderr
    assert [r["custom_id"] for r in rows_of(results, "after-pickle")] == ids
    assert not any(m.exists() for m in markers)


# -- 2. Redis with a password -----------------------------------------------------------


class PasswordRedis(RedisServer):
    """A redis-server that requires ``password``."""

    def __init__(self, directory: Path, password: str) -> None:
        self.password = password
        super().__init__(directory)

    def start(self) -> None:
        if "--requirepass" not in self.args:
            self.args += ["--requirepass", self.password]
            self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        super().start()


@pytest.fixture
def password_redis(tmp_path):
    server = PasswordRedis(tmp_path / "redis-auth", PASSWORD)
    yield server
    server.stop()


@pytest.mark.slow
def test_redis_with_a_password_works_with_the_right_one_and_refuses_others_without_echoing(
        password_redis, tmp_path, workers):
    port = password_redis.port
    good = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    workers(good, "w-auth", backends="fake", fake_models="demo")
    path = tmp_path / "in.jsonl"
    ids = write_prompts(path, ["a", "b", "c"])
    results = tmp_path / "results"
    out = inferq("--results", str(results), "submit", "classify", str(path), "--model", "demo",
                 "--job-id", "with-password", "--wait", env={"INFERQ_BROKER_URL": good})
    assert out.returncode == 0, out.stderr
    assert [r["custom_id"] for r in rows_of(results, "with-password")] == ids

    for bad in (f"redis://:{WRONG}@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        env = {"INFERQ_BROKER_URL": bad, "INFERQ_RESULTS": str(results)}
        submitted = inferq("submit", "classify", str(path), "--model", "demo", env=env)
        assert submitted.returncode == 2, submitted.stderr
        assert "Redis" in submitted.stderr and "password" in submitted.stderr, submitted.stderr
        assert "Traceback" not in submitted.stderr
        started = inferq("worker", env=env | {"INFERQ_BACKENDS": "fake",
                                              "INFERQ_FAKE_MODELS": "demo"}, timeout=30)
        assert started.returncode == 2, started.stderr
        assert "password" in started.stderr and "Traceback" not in started.stderr
        for output in (submitted, started):
            text = output.stdout + output.stderr
            assert WRONG not in text and PASSWORD not in text
            assert f"127.0.0.1:{port}" in text  # says which Redis
    assert redis.Redis.from_url(good).llen("inferq.model.demo") == 0


def test_a_broker_url_with_a_password_is_never_printed_in_errors():
    out = inferq("submit", "classify", "nowhere.jsonl", "--model", "demo",
                 env={"INFERQ_BROKER_URL": f"redis://user:{PASSWORD}@127.0.0.1:1/0"})
    assert out.returncode == 1
    assert "cannot reach Redis at redis://user:***@127.0.0.1:1/0" in out.stderr
    assert PASSWORD not in out.stderr + out.stdout


# -- 3. Redis over TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=inferq test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


class TlsRedis(RedisServer):
    """A redis-server that speaks TLS only (no plain port); clients need no certificate."""

    def __init__(self, directory: Path, tls: dict[str, Path]) -> None:
        self.tls = tls
        super().__init__(directory)

    def start(self) -> None:
        if "--tls-port" not in self.args:
            at = self.args.index("--port")
            self.args[at:at + 2] = ["--port", "0", "--tls-port", str(self.port)]
            self.args += ["--tls-cert-file", str(self.tls["cert"]), "--tls-key-file",
                          str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                          "--tls-auth-clients", "no"]
            self.url = (f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required"
                        f"&ssl_ca_certs={self.tls['ca']}")
        super().start()


@pytest.fixture
def tls_redis(tmp_path, tls_files):
    server = TlsRedis(tmp_path / "redis-tls", tls_files)
    yield server
    server.stop()


@pytest.mark.slow
def test_redis_over_tls_runs_a_job_with_the_certificate_checked(tls_redis, tmp_path, workers):
    workers(tls_redis.url, "w-tls", backends="fake", fake_models="demo")
    path = tmp_path / "in.jsonl"
    ids = write_prompts(path, ["a", "b", "c", "d"])
    results = tmp_path / "results"
    out = inferq("--results", str(results), "submit", "classify", str(path), "--model", "demo",
                 "--job-id", "over-tls", "--wait", env={"INFERQ_BROKER_URL": tls_redis.url})
    assert out.returncode == 0, out.stderr
    assert [r["custom_id"] for r in rows_of(results, "over-tls")] == ids
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis.Redis.from_url(f"rediss://127.0.0.1:{tls_redis.port}/0").ping()


@pytest.mark.slow
def test_celerys_broker_connection_checks_the_certificate_even_when_the_url_names_no_options(
        tls_redis):
    """kombu alone would connect to a rediss:// URL without ssl options with no checks."""
    app = create_app(Settings(broker_url=f"rediss://127.0.0.1:{tls_redis.port}/0"))
    with app.connection_for_write() as conn, pytest.raises(Exception,
                                                           match="CERTIFICATE_VERIFY_FAILED"):
        conn.ensure_connection(max_retries=1)
    trusted = create_app(Settings(broker_url=tls_redis.url))
    with trusted.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connected


@pytest.mark.parametrize("query", [
    "ssl_cert_reqs=none", "ssl_cert_reqs=CERT_NONE", "ssl_cert_reqs=None",
    "ssl_cert_reqs=required&ssl_cert_reqs=none",  # kombu reads the last, redis-py the first
    "ssl_cert_reqs=required&ssl_check_hostname=false",
])
def test_a_tls_url_that_turns_certificate_checks_off_is_refused(query):
    url = f"rediss://:{PASSWORD}@127.0.0.1:6380/0?{query}"
    with pytest.raises(ValueError, match="certificate") as refused:
        Settings(broker_url=url)
    assert PASSWORD not in str(refused.value)


def test_the_cli_refuses_a_tls_url_without_certificate_checks_with_exit_2():
    url = f"rediss://:{PASSWORD}@127.0.0.1:1/0?ssl_cert_reqs=none"
    out = inferq("submit", "classify", "in.jsonl", "--model", "demo",
                 env={"INFERQ_BROKER_URL": url})
    assert out.returncode == 2
    assert "configuration" in out.stderr and "ssl_cert_reqs" in out.stderr
    assert PASSWORD not in out.stderr + out.stdout


# -- 4. names that are paths ---------------------------------------------------------------

BAD_MODEL_IDS = ["../tiny", "..", "/etc/passwd", "models/../../etc/passwd",
                 "http://evil.example/m.gguf", "file:///etc/passwd", "C:\\models\\m.gguf",
                 "tiny\n", "~/m.gguf", ".hidden"]


@pytest.mark.parametrize("model", BAD_MODEL_IDS)
def test_model_ids_that_are_paths_or_urls_are_refused_by_submit_before_any_io(tmp_path, model):
    missing = tmp_path / "never-opened.jsonl"  # had submit read it, it would say so
    out = inferq("--broker-url", CLOSED, "--results", str(tmp_path / "results"), "submit",
                 "classify", str(missing), "--model", model)
    assert out.returncode == 2, out.stderr
    assert "model" in out.stderr and "not a valid name" in out.stderr
    assert "no such file" not in out.stderr and "Redis" not in out.stderr
    assert not (tmp_path / "results").exists()


def test_a_model_id_with_a_nul_byte_is_refused_by_submit(tmp_path):
    from click.testing import CliRunner

    from worker.cli import main

    # argv cannot carry NUL: run the same command in this process.
    result = CliRunner().invoke(main, ["--broker-url", CLOSED, "--results",
                                       str(tmp_path / "results"), "submit", "classify",
                                       str(tmp_path / "never-opened.jsonl"), "--model",
                                       "tiny\x00../../etc/passwd"])
    assert result.exit_code == 2, result.output
    assert "not a valid name" in result.output
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("job_id", ["../x", "..", "/tmp/x", "a/b", "x\n", "job=x", "."])
def test_job_ids_that_could_leave_the_results_root_are_refused_by_submit(tmp_path, job_id):
    out = inferq("--broker-url", CLOSED, "--results", str(tmp_path / "results"), "submit",
                 "classify", str(tmp_path / "never-opened.jsonl"), "--model", "demo",
                 "--job-id", job_id)
    assert out.returncode == 2, out.stderr
    assert "job_id" in out.stderr and "not a valid name" in out.stderr


@pytest.mark.parametrize("command", ["status", "cancel", "results", "tail", "reconcile"])
def test_commands_taking_a_job_id_refuse_one_that_is_a_path(tmp_path, command):
    results = tmp_path / "a" / "results"
    (results / "jobs").mkdir(parents=True)
    outside = tmp_path / "a" / "x"  # results/jobs/../../x
    outside.mkdir()
    (outside / "spec.json").write_text(json.dumps({"op": "classify", "model": "demo"}))
    before = files_under(tmp_path)
    out = inferq("--broker-url", CLOSED, "--results", str(results), command, "../../x")
    assert out.returncode == 2, out.stderr
    assert "not a valid job id" in out.stderr
    assert files_under(tmp_path) == before


@pytest.mark.slow
def test_a_chunk_message_whose_job_id_is_a_path_writes_nothing_outside_the_results_root(
        redis_url, tmp_path, start_worker):
    """Someone with access to Redis renames a queued job's keys to a path-like id and
    sends a chunk message for it: the worker must not build paths from that id."""
    results = tmp_path / "deep" / "er" / "results"
    path = tmp_path / "in.jsonl"
    write_prompts(path, ["a", "b"])
    out = inferq("--broker-url", redis_url, "--results", str(results), "submit", "classify",
                 str(path), "--model", "demo", "--job-id", "legit", "--queue-anyway")
    assert out.returncode == 0, out.stderr
    client = redis.Redis.from_url(redis_url)
    client.delete("inferq.model.demo")  # the real message never runs
    # Unchecked, parts would go to deep/er/escaped/ and the manifest to deep/escaped/.
    hostile = "../../../escaped"
    for key in client.keys(keys.job("legit") + "*"):
        client.rename(key, key.decode().replace(keys.job("legit"), keys.job(hostile)))
    worker = start_worker("w1", str(results), backends="fake", fake_models="demo")
    before = files_under(tmp_path) - files_under(results)
    create_app(Settings(broker_url=redis_url)).send_task(TASK, args=[hostile, 0],
                                                         queue="inferq.model.demo")
    deadline = time.monotonic() + 15
    while client.llen("inferq.model.demo") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert files_under(tmp_path) - files_under(results) == before
    assert worker.process.poll() is None
    assert "is not a valid job id" in worker.log.read_text()
    assert RedisJobStore(client).status(hostile).state == "queued"  # never ran


@pytest.mark.slow
def test_results_of_a_job_with_a_chosen_id_land_under_the_results_root(redis_url, tmp_path,
                                                                      start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "in.jsonl"
    write_prompts(path, ["a", "b", "c"])
    out = inferq("--broker-url", redis_url, "--results", str(results), "submit", "classify",
                 str(path), "--model", "demo", "--job-id", "my_job-1", "--wait")
    assert out.returncode == 0, out.stderr
    written = files_under(tmp_path) - {path} - {p for p in tmp_path.glob("*.log")}
    assert written and all(p.resolve().is_relative_to(results.resolve()) for p in written)
    assert (results / "results" / "job=my_job-1" / "part-000000.parquet").is_file()


@pytest.fixture
def outside_and_root(tmp_path, tiny_model):
    """A model root with a real GGUF, a symlink to it inside the root, and symlinks that
    lead out of the root to a GGUF and to a safetensors directory's weights."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(tiny_model.gguf_path, outside / "secret.gguf")
    shutil.copytree(tiny_model.hf_dir, outside / "secret-hf")
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_model.gguf_path, root / "tiny.gguf")
    (root / "alias.gguf").symlink_to(root / "tiny.gguf")
    (root / "leak.gguf").symlink_to(outside / "secret.gguf")
    (root / "relative-leak.gguf").symlink_to(Path("..") / "elsewhere" / "secret.gguf")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    hf = root / "half-leak"
    hf.mkdir()
    for item in (tiny_model.hf_dir).iterdir():
        if item.suffix == ".safetensors":
            (hf / item.name).symlink_to(outside / "secret-hf" / item.name)
        else:
            shutil.copy(item, hf / item.name)
    return outside, root


def test_symlinks_that_lead_out_of_a_model_root_are_not_served(outside_and_root):
    _, root = outside_and_root
    catalog = Catalog.build(roots=[str(root)])
    assert catalog.model_ids() == ["alias", "tiny"]  # no leak, relative-leak, half-leak
    for model_id in catalog.model_ids():
        entry = catalog.entry_for(model_id, "llama_cpp")
        assert entry is not None
        assert Path(entry.path).resolve().is_relative_to(root.resolve())


def test_a_worker_lists_only_the_models_inside_its_roots(outside_and_root, tmp_path):
    _, root = outside_and_root
    out = inferq("worker", "--dry-run", env={"INFERQ_MODEL_ROOTS": str(root),
                                              "INFERQ_BACKENDS": "llama_cpp,mlx",
                                              "INFERQ_BROKER_URL": CLOSED})
    if out.returncode == 2 and "no servable models" in out.stderr:
        pytest.skip("neither llama_cpp nor mlx is available here")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["models"]) == ["alias", "tiny"]


def test_a_file_outside_the_roots_is_served_when_the_catalog_file_names_it(outside_and_root,
                                                                          tmp_path):
    outside, root = outside_and_root
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(f'[models.secret]\ngguf = "{outside / "secret.gguf"}"\n')
    catalog = Catalog.build(roots=[str(root)], catalog_file=str(catalog_file))
    assert catalog.model_ids() == ["alias", "secret", "tiny"]
    assert catalog.entry_for("secret", "llama_cpp").path == str(outside / "secret.gguf")


def test_a_model_file_swapped_for_an_outside_symlink_after_discovery_is_not_served(
        outside_and_root):
    outside, root = outside_and_root
    catalog = Catalog.build(roots=[str(root)])
    assert catalog.entry_for("tiny", "llama_cpp") is not None
    (root / "tiny.gguf").unlink()
    (root / "tiny.gguf").symlink_to(outside / "secret.gguf")
    assert catalog.entry_for("tiny", "llama_cpp") is None


# -- 5. crafted GGUF files -------------------------------------------------------------------

U32, U64, STRING, ARRAY = 4, 10, 8, 9


def gguf(*, tensors: int = 0, kv: int = 0, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, kv) + body


def gguf_string(text: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(text) if length is None else length) + text


CRAFTED = {
    "empty": b"",
    "truncated-header": gguf()[:13],
    "huge-tensor-count": gguf(tensors=2**62),
    "huge-kv-count": gguf(kv=2**40),
    "huge-key-length": gguf(kv=1, body=gguf_string(b"general.name", 2**60)),
    # within the header's string limit, but the file holds 5 bytes of it
    "string-longer-than-the-file": gguf(kv=1, body=gguf_string(b"general", 2**24 - 1)),
    "array-longer-than-the-file": gguf(kv=1, body=gguf_string(b"tokenizer.ggml.scores")
                                       + struct.pack("<IIQ", ARRAY, U64, 2**24)),
    "deeply-nested-arrays": gguf(kv=1, body=gguf_string(b"general.deep") + struct.pack(
        "<I", ARRAY) + struct.pack("<IQ", ARRAY, 1) * 100_000 + struct.pack("<IQ", U32, 0)),
    "tensors-without-tensor-info": gguf(tensors=3, kv=1, body=gguf_string(
        b"general.architecture") + struct.pack("<I", STRING) + gguf_string(b"llama")),
}


@pytest.fixture
def crafted_root(tmp_path) -> Path:
    root = tmp_path / "crafted"
    root.mkdir()
    for name, data in CRAFTED.items():
        (root / f"{name}.gguf").write_bytes(data)
    return root


def test_discovery_lists_crafted_gguf_files_without_failing(crafted_root):
    found = inference.discover(crafted_root)
    assert sorted(Path(m.path).stem for m in found) == sorted(CRAFTED)
    assert all(m.model_type in ("", "llama") for m in found)


@pytest.mark.llama
@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_gguf_fails_to_load_as_a_clean_model_load_error_fast_and_small(
        crafted_root, name):
    pytest.importorskip("llama_cpp")
    path = str(crafted_root / f"{name}.gguf")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ModelLoadError) as failed:
            inference.load_model(path, LoadOptions(backend="llama_cpp"))
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert failed.value.path == path and failed.value.reason
    assert elapsed < 2.0, elapsed
    assert peak < 4 * 2**20, f"{peak:,} bytes allocated"


@pytest.mark.slow
@pytest.mark.llama
def test_a_crafted_gguf_in_a_workers_catalog_fails_its_rows_and_the_worker_carries_on(
        redis_url, tmp_path, tiny_model, start_worker):
    pytest.importorskip("llama_cpp")
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_model.gguf_path, root / "tiny.gguf")
    (root / "evil.gguf").write_bytes(CRAFTED["huge-key-length"])
    results = tmp_path / "results"
    worker = start_worker("w-llama", str(results), model_roots=str(root), backends="llama_cpp")
    path = tmp_path / "in.jsonl"
    ids = write_prompts(path, [f"row {i}" for i in range(6)])
    common = ("--broker-url", redis_url, "--results", str(results), "submit", "classify",
              str(path), "--labels", "yes,no", "--chunk-size", "3", "--wait")
    bad = inferq(*common, "--model", "evil", "--job-id", "evil-job")
    rows = rows_of(results, "evil-job")
    assert [r["custom_id"] for r in rows] == ids
    assert {r["error_code"] for r in rows} == {"chunk_failed"}
    assert all("GGUF header claims" in r["error_message"] for r in rows), rows[0]
    assert bad.returncode == 1  # the job ended with every row failed
    assert worker.process.poll() is None
    good = inferq(*common, "--model", "tiny", "--job-id", "tiny-job")
    assert good.returncode == 0, good.stderr
    assert all(r["error_code"] is None for r in rows_of(results, "tiny-job"))


# -- 6. oversized inputs ---------------------------------------------------------------------


def test_input_limits_come_from_settings_and_must_be_positive(monkeypatch):
    monkeypatch.setenv("INFERQ_MAX_ROWS", "5")
    monkeypatch.setenv("INFERQ_MAX_PROMPT_BYTES", "64")
    monkeypatch.setenv("INFERQ_MAX_INPUT_BYTES", "4096")
    limits = Settings.load().input_limits()
    assert (limits.max_rows, limits.max_prompt_bytes, limits.max_total_bytes) == (5, 64, 4096)
    monkeypatch.setenv("INFERQ_MAX_ROWS", "0")
    with pytest.raises(ValueError, match="max_rows"):
        Settings.load()


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "expected"), [
    ("INFERQ_MAX_ROWS=5", "more than 5 rows; the limit is 5 rows a job"),
    ("INFERQ_MAX_INPUT_BYTES=100", "; the limit is 100 bytes a job: split the file"),
])
def test_an_input_over_the_row_or_file_size_limit_is_rejected_with_exit_2(
        redis_url, tmp_path, setting, expected):
    path = tmp_path / "in.jsonl"
    write_prompts(path, [f"row {i}" for i in range(6)])
    name, value = setting.split("=")
    out = inferq("--broker-url", redis_url, "--results", str(tmp_path / "results"), "submit",
                 "classify", str(path), "--model", "demo", "--queue-anyway",
                 env={name: value})
    assert out.returncode == 2
    assert expected in out.stderr and str(path) in out.stderr
    client = redis.Redis.from_url(redis_url)
    assert client.llen("inferq.model.demo") == 0
    assert RedisJobStore(client).list_jobs(5) == []  # refused before anything was created


@pytest.mark.slow
def test_a_prompt_over_the_byte_limit_becomes_a_prompt_too_large_error_row(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "in.jsonl"
    prompts = ["x" * 64, "x" * 65, "é" * 32, "é" * 33, "short"]  # é is 2 UTF-8 bytes
    ids = write_prompts(path, prompts)
    out = inferq("--broker-url", redis_url, "--results", str(results), "submit", "classify",
                 str(path), "--model", "demo", "--job-id", "big-prompts", "--wait",
                 env={"INFERQ_MAX_PROMPT_BYTES": "64"})
    assert out.returncode == 0, out.stderr
    rows = rows_of(results, "big-prompts")
    assert [r["custom_id"] for r in rows] == ids
    assert [r["error_code"] for r in rows] == [None, "prompt_too_large", None,
                                               "prompt_too_large", None]
    assert "prompt is 66 bytes; the limit is 64 bytes" in rows[3]["error_message"]
