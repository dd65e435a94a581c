"""Parse a GGUF file with llama.cpp in a throwaway process before loading it for real.

llama.cpp's GGUF parser has had memory-safety bugs; a file that crashes it should
take down this probe, not the worker. The probe loads the vocabulary and metadata
only (``vocab_only``), so it costs about a second, once per model load.

    python -m inference.backends._llama_probe MODEL.gguf
"""

from __future__ import annotations

import signal
import subprocess
import sys

from inference.errors import ModelLoadError

PROBE_TIMEOUT = 120.0
#: The command that probes a file; tests replace it to simulate a crashing parser.
PROBE_COMMAND = [sys.executable, "-m", "inference.backends._llama_probe"]
_REFUSED = 3


def probe(path: str) -> None:
    """Raise `ModelLoadError` unless llama.cpp parses ``path`` in a separate process."""
    try:
        done = subprocess.run([*PROBE_COMMAND, path], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(path, f"llama.cpp took over {PROBE_TIMEOUT:.0f}s to parse it") \
            from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ModelLoadError(path, f"llama.cpp crashed ({name}) parsing it in a probe "
                                   "process; it was not loaded")
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise ModelLoadError(path, f"llama.cpp refused it: {reason}")


def _main(path: str) -> int:
    import llama_cpp as lc

    from inference.backends._llama_engine import _init_backend, _log_tail, _recent_log

    _init_backend()
    mark = len(_recent_log)
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(path.encode(), params)
    if not model:
        print(_log_tail(mark) or "could not load it", file=sys.stderr)
        return _REFUSED
    lc.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
