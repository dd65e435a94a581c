"""Model discovery on real files: GGUF and safetensors directories, nested, bounded."""

from __future__ import annotations

import shutil

import pytest

from inference import discover
from inference.gguf_header import read_gguf_header


@pytest.fixture
def model_root(tmp_path, tiny_model):
    root = tmp_path / "models"
    shutil.copytree(tiny_model.hf_dir, root / "tiny-mlx")
    (root / "ggufs" / "team").mkdir(parents=True)
    shutil.copy(tiny_model.gguf_path, root / "ggufs" / "team" / "tiny.gguf")
    shutil.copy(tiny_model.gguf_path, root / "split-00001-of-00002.gguf")
    shutil.copy(tiny_model.gguf_path, root / "split-00002-of-00002.gguf")
    (root / ".hidden").mkdir()
    shutil.copy(tiny_model.gguf_path, root / ".hidden" / "secret.gguf")
    return root


def test_finds_gguf_files_and_safetensors_directories_in_nested_trees(model_root):
    found = {m.path.removeprefix(str(model_root) + "/"): m for m in discover(model_root)}
    assert sorted(found) == ["ggufs/team/tiny.gguf", "split-00001-of-00002.gguf", "tiny-mlx"]
    assert found["tiny-mlx"].format == "safetensors" and found["tiny-mlx"].model_type == "llama"
    gguf = found["ggufs/team/tiny.gguf"]
    assert (gguf.format, gguf.model_type, gguf.quant_bits) == ("gguf", "llama", 32)
    assert gguf.size_bytes > 0


def test_depth_limit_bounds_the_scan(model_root):
    shallow = [m.path for m in discover(model_root, max_depth=1)]
    assert not any(p.endswith("team/tiny.gguf") for p in shallow)
    assert any(p.endswith("tiny-mlx") for p in shallow)


def test_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        discover(tmp_path / "file")


def test_a_bad_config_or_gguf_is_listed_with_an_empty_type(tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "junk.gguf").write_bytes(b"nope")
    found = {m.format: m for m in discover(tmp_path)}
    assert found["safetensors"].model_type == ""
    assert found["gguf"].model_type == ""


def test_quantisation_is_read_from_config(tmp_path):
    d = tmp_path / "q4"
    d.mkdir()
    (d / "config.json").write_text(
        '{"model_type": "qwen3", "quantization": {"bits": 4, "group_size": 64}}')
    (d / "model.safetensors").write_bytes(b"\0")
    (m,) = discover(tmp_path)
    assert (m.model_type, m.quant_bits, m.quant_group) == ("qwen3", 4, 64)


def test_gguf_header_reader_reads_the_tiny_models_metadata(tiny_model):
    header = read_gguf_header(str(tiny_model.gguf_path))
    assert header.architecture == "llama"
    assert header.metadata["llama.block_count"] == tiny_model.config.num_layers
    assert header.tensor_count == 3 + 9 * tiny_model.config.num_layers
