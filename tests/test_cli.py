"""The `inferq` console script, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

INFERQ = str(Path(sys.executable).parent / "inferq")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, *args], capture_output=True, text=True, timeout=60)


def test_backends_lists_registered_backends_and_the_default():
    out = run("backends", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"llama_cpp", "http"} <= set(rows)
    assert sum(r["default"] for r in rows.values()) == 1
    table = run("backends").stdout
    assert table.splitlines()[0].split() == ["BACKEND", "AVAILABLE", "DEFAULT"]


def test_models_finds_the_tiny_model_in_both_formats(tmp_path, tiny_model):
    shutil.copy(tiny_model.gguf_path, tmp_path / "tiny.gguf")
    shutil.copytree(tiny_model.hf_dir, tmp_path / "tiny-mlx")
    out = run("models", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    found = {Path(m["path"]).name: m for m in json.loads(out.stdout)}
    assert found["tiny.gguf"]["format"] == "gguf"
    assert found["tiny-mlx"]["format"] == "safetensors"
    assert found["tiny-mlx"]["model_type"] == "llama"


def test_models_on_a_missing_root_exits_2_with_the_path(tmp_path):
    out = run("models", str(tmp_path / "absent"))
    assert out.returncode == 2
    assert "absent" in out.stderr and "does not exist" in out.stderr


def test_models_without_a_root_lists_this_hosts_catalog(tmp_path, tiny_model):
    shutil.copy(tiny_model.gguf_path, tmp_path / "tiny.gguf")
    env = {"INFERQ_MODEL_ROOTS": str(tmp_path), "INFERQ_FAKE_MODELS": "demo",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([INFERQ, "models", "--json"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["model"]: r for r in json.loads(out.stdout)}
    assert "llama_cpp" in rows["tiny"]["backends"]
    assert rows["tiny"]["files"]["llama_cpp"] == str(tmp_path / "tiny.gguf")
    assert rows["demo"]["backends"] == ["fake"]
