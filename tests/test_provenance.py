"""Provenance: every metrics part and the manifest say which engine, model file and
settings produced a job's rows; a model file is hashed once per machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib.metadata import version

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.lifecycle import ChunkSummary
from jobs.provenance import Provenance, distinct
from jobs.schema import METRICS_SCHEMA
from tests.test_queue import LABELS, inferq, write_jsonl
from worker.digest import DigestCache


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_files_sha256_is_right_and_read_from_the_cache_until_the_file_changes(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 100)
    cache_dir = tmp_path / "digests"
    first = DigestCache(cache_dir).digest(str(model))
    assert (first.size, first.sha256) == (model.stat().st_size, _sha256(model.read_bytes()))
    entry = DigestCache(cache_dir).entry(model)
    assert json.loads(entry.read_text())["sha256"] == first.sha256
    # A new process (a fresh cache object) reads the entry instead of hashing again: an
    # entry doctored on purpose is what comes back.
    doctored = json.loads(entry.read_text()) | {"sha256": "f" * 64}
    entry.write_text(json.dumps(doctored))
    assert DigestCache(cache_dir).digest(str(model)).sha256 == "f" * 64
    # Changing the file (size and modification time) makes the entry stale: hashed again.
    model.write_bytes(b"GGUF changed")
    again = DigestCache(cache_dir).digest(str(model))
    assert again.sha256 == _sha256(b"GGUF changed") and again.size == 12
    assert json.loads(entry.read_text())["sha256"] == again.sha256


def test_a_directory_digest_is_the_sha256_of_its_files_manifest(tmp_path):
    model = tmp_path / "mlx-model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_bytes(b"{}")
    (model / "sub" / "w.safetensors").write_bytes(b"weights")
    (model / ".DS_Store").write_bytes(b"ignored")
    manifest = (f"{_sha256(b'{}')}  config.json\n"
                f"{_sha256(b'weights')}  sub/w.safetensors\n")
    digest = DigestCache(tmp_path / "digests").digest(str(model))
    assert digest.sha256 == _sha256(manifest.encode()) and digest.size == 9


def test_a_url_or_fake_model_has_no_digest_and_touches_no_cache(tmp_path):
    cache = DigestCache(tmp_path / "digests")
    assert cache.digest("http://127.0.0.1:8080/v1").sha256 == ""
    assert cache.digest("fake://tiny").size == 0
    assert not (tmp_path / "digests").exists()


def test_the_manifest_lists_each_distinct_provenance_with_its_chunks():
    one = Provenance(engine="llama-cpp-python", engine_version="0.3.36", model_sha256="a" * 64)
    other = Provenance(engine="mlx-lm", engine_version="0.32.2", model_sha256="b" * 64)
    chunks = [(2, one.to_dict()), (0, one.to_dict()), (1, other.to_dict()), (3, {})]
    assert distinct(chunks) == [one.to_dict() | {"chunks": [0, 2]},
                                other.to_dict() | {"chunks": [1]}]


def test_a_summary_from_a_newer_inferq_with_unknown_fields_still_reads():
    newer = ChunkSummary(rows=3, errors=0).to_dict() | {"a_field_from_the_future": 1}
    assert ChunkSummary.from_dict(newer) == ChunkSummary(rows=3, errors=0)


def test_metrics_parts_before_version_4_read_with_nulls_beside_new_ones(tmp_path):
    old_schema = pa.schema([f for f in METRICS_SCHEMA if f.name != "engine"
                            and f.name not in Provenance.__dataclass_fields__])
    row = {f.name: None for f in old_schema} | {"job_id": "old", "rows": 2}
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), tmp_path / "old.parquet")
    new = {f.name: None for f in METRICS_SCHEMA} | {"job_id": "new", "engine": "mlx-lm"}
    pq.write_table(pa.Table.from_pylist([new], schema=METRICS_SCHEMA), tmp_path / "new.parquet")
    import pyarrow.dataset as ds

    table = ds.dataset(str(tmp_path), schema=METRICS_SCHEMA).to_table()
    assert sorted(zip(table.column("job_id").to_pylist(), table.column("engine").to_pylist(),
                      strict=True)) == [("new", "mlx-lm"), ("old", None)]


@pytest.mark.slow
@pytest.mark.llama
def test_a_real_jobs_metrics_parts_and_manifest_carry_engine_model_digest_and_settings(
        redis_url, tmp_path, tiny_model, start_worker):
    pytest.importorskip("llama_cpp")
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_model.gguf_path, root / "tiny.gguf")
    model_bytes = (root / "tiny.gguf").read_bytes()
    results = tmp_path / "results"
    digests = tmp_path / "digests"
    worker = start_worker("w-prov", str(results), model_roots=str(root), backends="llama_cpp",
                          parallel_slots="2", digest_cache=str(digests))
    write_jsonl(tmp_path / "in.jsonl", 30, bad=False)
    job_ids = []
    for _ in range(2):  # two jobs, six chunks: the file is hashed once
        out = inferq(redis_url, results, "submit", "classify", str(tmp_path / "in.jsonl"),
                     "--model", "tiny", "--labels", LABELS, "--chunk-size", "10", "--wait")
        assert out.returncode == 0, out.stderr
        job_ids.append(out.stdout.split()[0])
    expected = {
        "engine": "llama-cpp-python", "engine_version": version("llama-cpp-python"),
        "model_path": str(root / "tiny.gguf"), "model_size_bytes": len(model_bytes),
        "model_sha256": _sha256(model_bytes), "inferq_version": version("inferq"),
        "parallel_slots": 2, "batch_size": 64}
    for job_id in job_ids:
        parts = sorted((results / "metrics" / f"job={job_id}").glob("*.parquet"))
        assert len(parts) == 3
        for part in parts:
            [row] = pq.read_table(part).to_pylist()
            assert {k: row[k] for k in expected} == expected
            assert row["context_len"] > 0
        manifest = json.loads((results / "jobs" / job_id / "manifest.json").read_text())
        assert manifest["metrics_schema_version"] == 4
        [provenance] = manifest["provenance"]
        assert {k: provenance[k] for k in expected} == expected
        assert provenance["chunks"] == [0, 1, 2]
    log = worker.log.read_text()
    assert log.count("sha256 of") == 1, log
    assert len(os.listdir(digests)) == 1
