"""Model file digests (size and SHA-256), computed once per file and cached on disk.

Hashing a multi-gigabyte GGUF takes seconds to minutes, so it happens once per file
per machine: the answer is kept in a small JSON file per model path under the
digest cache (``INFERQ_DIGEST_CACHE``, else ``$XDG_CACHE_HOME/inferq/digests``, else
``~/.cache/inferq/digests``), valid while the file's size and modification time
are the ones recorded with it. The model roots themselves may be read-only (a
container's mounted volume): nothing is written beside the models.

A directory (an MLX model) is digested as the SHA-256 of its ``sha256sum``-style
manifest (one ``<sha256>  <relative path>`` line per file, sorted by path), each
file's own digest cached as above; a split GGUF (``*-00001-of-0000N.gguf``) as the
manifest of its shards. A path that is not on this disk (an HTTP server's URL, the
fake backend's ``fake://``) has no digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("inferq.digest")

_SPLIT = re.compile(r"^(?P<stem>.+)-00001-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True, slots=True)
class Digest:
    """A model's size in bytes (all its files) and SHA-256; (0, "") = no file here."""

    size: int
    sha256: str


NONE = Digest(0, "")


def default_directory() -> Path:
    """``$INFERQ_DIGEST_CACHE``, else ``$XDG_CACHE_HOME/inferq/digests``, else ``~/.cache/...``."""
    explicit = os.environ.get("INFERQ_DIGEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferq" / "digests"


class DigestCache:
    """Digests of model files and directories, each file hashed once per machine."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_directory()
        self._memo: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()  # a threads-pool worker loads one model at a time

    def digest(self, path: str) -> Digest:
        """The digest of the model at ``path`` (a file, a directory, a split GGUF's first
        shard); `NONE` when it is not a path on this disk."""
        if "://" in path or not os.path.exists(path):
            return NONE
        target = Path(path)
        if target.is_dir():
            return self._manifest(target, sorted(
                p for p in target.rglob("*")
                if p.is_file() and not any(part.startswith(".")
                                           for part in p.relative_to(target).parts)))
        split = _SPLIT.match(target.name)
        if split:
            count = int(split["count"])
            shards = [target.with_name(f"{split['stem']}-{i:05d}-of-{count:05d}.gguf")
                      for i in range(1, count + 1)]
            return self._manifest(target.parent, [s for s in shards if s.is_file()])
        with self._lock:
            return Digest(target.stat().st_size, self.file_sha256(target))

    def file_sha256(self, path: Path) -> str:
        """One file's SHA-256: from memory, else from the disk cache, else hashed (and
        then cached) when its size or modification time changed since."""
        real = os.path.realpath(path)
        stat = os.stat(real)
        key = (real, stat.st_size, stat.st_mtime_ns)
        known = self._memo.get(key) or self._read(key)
        if known is None:
            started = time.monotonic()
            with open(real, "rb") as f:
                known = hashlib.file_digest(f, "sha256").hexdigest()
            log.info("sha256 of %s (%d bytes) computed in %.1f s; cached under %s",
                     real, stat.st_size, time.monotonic() - started, self.directory)
            self._write(key, known)
        self._memo[key] = known
        return known

    def entry(self, path: str | Path) -> Path:
        """The cache file that holds ``path``'s digest."""
        name = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
        return self.directory / f"{name}.json"

    def _manifest(self, root: Path, files: list[Path]) -> Digest:
        with self._lock:
            lines = [f"{self.file_sha256(f)}  {f.relative_to(root).as_posix()}\n" for f in files]
            size = sum(f.stat().st_size for f in files)
        return Digest(size, hashlib.sha256("".join(lines).encode()).hexdigest())

    def _read(self, key: tuple[str, int, int]) -> str | None:
        try:
            data = json.loads(self.entry(key[0]).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or [data.get("path"), data.get("size"),
                                          data.get("mtime_ns")] != list(key):
            return None  # another file, or this one changed since: hash it again
        sha = data.get("sha256")
        return sha if isinstance(sha, str) and len(sha) == 64 else None

    def _write(self, key: tuple[str, int, int], sha256: str) -> None:
        entry = self.entry(key[0])
        document = {"path": key[0], "size": key[1], "mtime_ns": key[2], "sha256": sha256}
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            temporary = entry.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(document))
            os.replace(temporary, entry)  # readers see the old entry or the new, whole
        except OSError as exc:  # a read-only home: the digest is still right, just not kept
            log.warning("cannot cache the digest of %s under %s: %s", key[0], self.directory,
                        exc)
