"""The backend registry: preference order, errors, availability, built-in backends."""

from __future__ import annotations

import subprocess
import sys

import pytest

import inference
from inference import (
    BackendNotFound,
    BackendUnavailable,
    LoadOptions,
    NoBackendAvailable,
    NoBackendRegistered,
    Registry,
)


class FakeBackend:
    def __init__(self, name: str, available: bool = True) -> None:
        self.name = name
        self._available = available
        self.loaded: list[str] = []

    def available(self) -> bool:
        return self._available

    def load_model(self, path, options=None):
        self.loaded.append(path)
        return path


def test_default_follows_platform_preference_not_registration_order():
    reg = Registry()
    for name in ("zeta", "mlx", "llama_cpp", "rocm", "alpha"):
        reg.register(FakeBackend(name))
    assert reg.preference_order() == ["rocm", "llama_cpp", "mlx", "alpha", "zeta"]
    assert reg.default().name == "rocm"


def test_default_skips_unavailable_preferred_backend():
    reg = Registry()
    reg.register(FakeBackend("metal", available=False))
    reg.register(FakeBackend("llama_cpp"))
    assert reg.default().name == "llama_cpp"


def test_any_available_fallback_is_in_name_order():
    reg = Registry()
    for name in ("zeta", "beta", "alpha"):
        reg.register(FakeBackend(name, available=name != "alpha"))
    assert reg.default().name == "beta"
    assert reg.available() == ["beta", "zeta"]


def test_empty_registry_and_nothing_available_are_different_errors():
    reg = Registry()
    with pytest.raises(NoBackendRegistered):
        reg.default()
    reg.register(FakeBackend("metal", available=False))
    with pytest.raises(NoBackendAvailable, match="metal"):
        reg.default()


def test_unknown_backend_error_lists_registered_names():
    reg = Registry()
    reg.register(FakeBackend("mlx"))
    reg.register(FakeBackend("llama_cpp"))
    message = "'rocm' is not registered; registered: llama_cpp, mlx"
    with pytest.raises(BackendNotFound, match=message):
        reg.get("rocm")
    with pytest.raises(LookupError):
        reg.load_model("x", LoadOptions(backend="rocm"))


def test_a_second_backend_under_a_taken_name_is_refused_unless_replace():
    reg = Registry()
    first, second = FakeBackend("llama_cpp"), FakeBackend("llama_cpp", available=False)
    reg.register(first)
    with pytest.raises(ValueError, match=r"'llama_cpp' is already registered.*replace=True"):
        reg.register(second)
    assert reg.get("llama_cpp") is first
    reg.register(second, replace=True)
    assert reg.get("llama_cpp") is second


def test_load_model_uses_the_named_backend_only_when_available():
    reg = Registry()
    reg.register(FakeBackend("llama_cpp"))
    reg.register(FakeBackend("metal", available=False))
    assert reg.load_model("m.gguf") == "m.gguf"
    with pytest.raises(BackendUnavailable, match="metal"):
        reg.load_model("m", LoadOptions(backend="metal"))


def test_builtin_backends_are_registered_and_cheap():
    names = inference.names()
    assert {"llama_cpp", "http"} <= set(names)
    assert ("metal" in names) != ("mlx" in names)
    assert inference.get("http").available()


def test_importing_inference_imports_no_engine_or_third_party_package():
    code = ("import sys, inference; inference.registry().available();"
            "print(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names"
            " and m.split('.')[0] != 'inference' and not m.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.llama
def test_default_backend_on_a_cpu_machine_is_llama_cpp():
    pytest.importorskip("llama_cpp")
    if inference.get("llama_cpp").available() and "rocm" not in inference.names() \
            and "cuda" not in inference.names() and "metal" not in inference.names():
        assert inference.default().name == "llama_cpp"
    else:
        pytest.skip("a GPU backend is registered here")
