"""Model catalog and queue routing: ids map to this host's files; queues follow them."""

from __future__ import annotations

import shutil

import pytest

from jobs.spec import JobSpec
from worker.catalog import Catalog, CatalogEntry, model_id_for
from worker.routing import queue_for, worker_queues


def test_discovered_names_become_model_ids():
    assert model_id_for("Qwen3-1.7B-Q8_0.gguf") == "qwen3-1.7b-q8_0"
    assert model_id_for("big-00001-of-00003.gguf") == "big"
    assert model_id_for("gemma 3 (4bit)") == "gemma-3-4bit"


def test_catalog_from_roots_and_file_maps_one_id_to_each_format(tmp_path, tiny_model):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_model.gguf_path, root / "tiny.gguf")
    shutil.copytree(tiny_model.hf_dir, root / "tiny-mlx")
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text('[models.tiny]\nmlx = "models/tiny-mlx"\n'
                            '[models.remote]\nhttp = "http://127.0.0.1:8080/v1#x"\n')
    catalog = Catalog.build(roots=[str(root)], catalog_file=str(catalog_file),
                            fake_models=["demo"])
    assert catalog.model_ids() == ["demo", "remote", "tiny", "tiny-mlx"]
    served = catalog.served(["llama_cpp", "mlx", "fake"])
    assert served == {"demo": ["fake"], "tiny": ["llama_cpp", "mlx"], "tiny-mlx": ["mlx"]}
    entry = catalog.entry_for("tiny", "mlx")
    assert entry is not None and entry.path == str((root / "tiny-mlx").resolve())


def test_a_catalog_file_with_an_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "catalog.toml"
    bad.write_text('[models.x]\nonnx = "x.onnx"\n')
    with pytest.raises(ValueError, match="'onnx' is not one of"):
        Catalog.build(catalog_file=str(bad))


def test_ids_that_are_paths_never_enter_the_catalog():
    catalog = Catalog([CatalogEntry("../etc", "gguf", "/x.gguf"),
                       CatalogEntry("a/b", "gguf", "/y.gguf"), CatalogEntry("ok", "gguf", "/z")])
    assert catalog.model_ids() == ["ok"]


def test_workers_consume_the_model_queue_and_one_queue_per_backend():
    assert worker_queues({"tiny": ["llama_cpp", "mlx"], "none": []}) == [
        "inferq.model.tiny", "inferq.llama_cpp.tiny", "inferq.mlx.tiny"]


def test_jobs_go_to_the_model_queue_unless_pinned():
    assert queue_for(JobSpec(op="classify", model="tiny")) == "inferq.model.tiny"
    assert queue_for(JobSpec(op="classify", model="tiny", backend="mlx")) == "inferq.mlx.tiny"
