"""The public surface of `inference` stays what it is."""

from __future__ import annotations

import inference

EXPECTED = [
    "PREFERENCE", "Backend", "BackendNotFound", "BackendUnavailable", "BatchResult",
    "ClassifyResult", "ConversionError", "DiscoveredModel", "GenerateMetrics", "GenerateOptions",
    "GenerationError", "InferenceError", "LoadOptions", "Message", "ModelInfo", "ModelLoadError",
    "NoBackendAvailable", "NoBackendRegistered", "PromptError", "Registry", "TextModel", "Token",
    "UnsupportedOperation", "default", "discover", "get", "load_model", "names", "register",
    "registry",
]


def test_exported_names_are_stable_and_sorted():
    assert inference.__all__ == EXPECTED
    assert inference.__all__ == sorted(inference.__all__, key=lambda n: (not n.isupper(), n))
    for name in EXPECTED:
        assert hasattr(inference, name)


def test_errors_subclass_the_matching_builtins():
    assert issubclass(inference.BackendNotFound, LookupError)
    assert issubclass(inference.PromptError, ValueError)
    assert issubclass(inference.ModelLoadError, OSError)
    for name in EXPECTED:
        obj = getattr(inference, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, inference.InferenceError)


def test_backends_satisfy_the_protocol():
    for name in inference.names():
        assert isinstance(inference.get(name), inference.Backend)


def test_jobs_exports_are_sorted_importable_and_typed():
    import importlib.resources
    import subprocess
    import sys

    import jobs

    assert jobs.__all__ == sorted(jobs.__all__, key=lambda n: (not n.isupper(), n))
    for name in jobs.__all__:
        assert getattr(jobs, name) is not None, name
    assert importlib.resources.files("jobs").joinpath("py.typed").is_file()
    # Submitting never loads chunk execution: the lazy names load on first use.
    probe = ("import sys, jobs, jobs.submit; "
             "print(sorted(m for m in ('jobs.execute', 'jobs.runner', 'jobs.isolate') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
