"""`PrefixCache`: prompt prefixes whose KV cells a llama.cpp context keeps between calls.

An entry is one reserved sequence id (after the decode slots) holding the cells
of a token prefix at positions 0..n-1. A call that finds a prompt group starting
with an entry's tokens copies those cells to its sequences (`llama_memory_seq_cp`
with a unified cache shares cells: no copy of the data, no extra cells) instead of
decoding the prefix again. Entries are kept in least-recently-used order, at
most ``entries`` of them and ``budget`` cells in all; a call that needs the cells
evicts the oldest first, so the cache never makes a prompt fail for lack of
cells. The cache lives and dies with its context: closing the model drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.backends._llama_engine import Engine

DEFAULT_ENTRIES = 4   #: prefixes kept at once


@dataclass(slots=True)
class Entry:
    seq: int            #: the llama.cpp sequence id that holds the cells
    tokens: list[int]   #: the prefix, from position 0


@dataclass(slots=True)
class Match:
    """How much of a group's prompts an entry already holds."""

    entry: Entry | None = None
    tokens: int = 0     #: leading tokens every prompt of the group takes from the entry


class PrefixCache:
    """Prefixes kept in sequence ids ``first_seq .. first_seq + entries - 1``."""

    def __init__(self, engine: Engine, first_seq: int, *, entries: int, budget: int) -> None:
        self._engine = engine
        self._free = list(range(first_seq + entries - 1, first_seq - 1, -1))
        self._entries: list[Entry] = []  # least recently used first
        self.budget = budget if entries > 0 else 0  #: most cells all entries may hold

    @property
    def cells(self) -> int:
        """KV cells the entries hold (an upper bound: entries may share cells)."""
        return sum(len(e.tokens) for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def prefixes(self) -> list[list[int]]:
        """The cached prefixes, least recently used first."""
        return [list(e.tokens) for e in self._entries]

    def match(self, prompts: list[list[int]], minimum: int) -> Match:
        """The entry covering the most leading tokens of every prompt (each keeps one
        token of its own); no entry when fewer than ``minimum`` would come from it."""
        best = Match()
        for entry in self._entries:
            covered = min(common_prefix(entry.tokens, ids, len(ids) - 1) for ids in prompts)
            if covered > best.tokens:
                best = Match(entry, covered)
        return best if best.tokens >= max(minimum, 1) else Match()

    def lend(self, match: Match, seqs: range) -> None:
        """Give each sequence in ``seqs`` the matched entry's cells for its first tokens."""
        if match.entry is None:
            return
        self._touch(match.entry)
        for seq in seqs:
            self._engine.copy_sequence(match.entry.seq, seq, 0, match.tokens)

    def make_room(self, cells: int, capacity: int, keep: Entry | None) -> bool:
        """Evict entries, oldest first and ``keep`` last, until ``cells`` more fit in
        ``capacity``. False when ``keep`` had to go too."""
        for entry in [e for e in self._entries if e is not keep]:
            if self.cells + cells <= capacity:
                return True
            self._evict(entry)
        if keep is not None and self.cells + cells > capacity:
            self._evict(keep)
            return False
        return True

    def remember(self, seq: int, tokens: list[int], match: Match) -> None:
        """Keep the cells of ``seq``'s first ``len(tokens)`` positions as a prefix.

        ``match`` is where the cells of its first tokens came from: an entry that
        ``tokens`` extends grows in place, otherwise a new entry is made.
        """
        if len(tokens) > self.budget or not tokens:
            return
        entry = match.entry
        if entry is not None and entry in self._entries and match.tokens == len(entry.tokens):
            if len(tokens) > match.tokens:
                self._engine.copy_sequence(seq, entry.seq, match.tokens, len(tokens))
                entry.tokens = list(tokens)
            self._touch(entry)
            self._trim(keep=entry)
            return
        if any(e.tokens == tokens for e in self._entries):
            return
        while self._entries and (not self._free or self.cells + len(tokens) > self.budget):
            self._evict(self._entries[0])
        if not self._free:
            return
        entry = Entry(self._free.pop(), list(tokens))
        self._engine.copy_sequence(seq, entry.seq, 0, len(tokens))
        self._entries.append(entry)

    def clear(self) -> None:
        """Forget every entry and free its cells."""
        for entry in list(self._entries):
            self._evict(entry)

    def forget(self) -> None:
        """Forget every entry whose cells are already gone (the memory was cleared)."""
        for entry in self._entries:
            self._free.append(entry.seq)
        self._entries.clear()

    def _trim(self, keep: Entry) -> None:
        for entry in [e for e in self._entries if e is not keep]:
            if self.cells <= self.budget:
                return
            self._evict(entry)

    def _touch(self, entry: Entry) -> None:
        self._entries.remove(entry)
        self._entries.append(entry)

    def _evict(self, entry: Entry) -> None:
        self._engine.remove_sequence(entry.seq)
        self._entries.remove(entry)
        self._free.append(entry.seq)


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``."""
    n = min(len(a), len(b), limit)
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n
