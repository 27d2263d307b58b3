"""One place that writes to the container's stdout, a line at a time.

Every line says who wrote it (`llm-entry |`, `engine |`, `proxy |`) and no
line carries a key: the redactor replaces every known key before printing,
and, as a second net for keys it does not know (a wrong key, one added to the
keys file a moment ago), the value of any key header a line shows.

Redaction costs the same with ten keys as with a hundred thousand: every key
is at least MIN_KEY_LENGTH characters long and has no white space (weak_keys.weakness
refuses anything else), so the secrets are indexed by their first
MIN_KEY_LENGTH characters and a line costs one dict lookup per window of its
runs of non-space characters. `python -m bench.redaction` measures it: about
20 µs a line with 10 keys and with 100,000 alike, where the loop over every
secret it replaced cost 26 ms a line with 50,000 keys. A secret outside that
shape (a Redis password may be short) is looked for on its own; there are few.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TextIO

from .inside.weak_keys import MIN_KEY_LENGTH

# `Authorization: Bearer <key>`, `x-api-key: <key>`, `api-key=<key>`, and the
# same inside a Python dict, JSON or an ASGI header tuple (b'api-key', b'<key>').
# A placeholder such as `<key>` in a help text is left alone.
_KEY_HEADER = re.compile(
    r"""(?ix)
    (\b(?:authorization|(?:x-)?api[-_]key)
       (?: ["']? \s* [:=] \s* ["']? | ["'] \s* , \s* b?["'] )       # separator
       (?:(?:bearer|basic|token)\s+)?)                                # an optional scheme
    (?!<) (?!(?:bearer|basic|token)\s+<) [^\s"',;)}\]]+              # the value
    """
)


# Where a key can be: a run of non-space characters at least as long as any key.
_LONG_RUN = re.compile(rf"\S{{{MIN_KEY_LENGTH},}}")
HIDDEN = "***"


class Secrets:
    """The strings never to print, and where a line holds any of them.

    Immutable: Console swaps in a new one when secrets are added, so a line
    being redacted in another thread sees either the old set or the new one.
    """

    def __init__(self, secrets: Iterable[str] = (), *, base: Secrets | None = None):
        known: frozenset[str] = base.all if base else frozenset()
        self.all: frozenset[str] = known | {secret for secret in secrets if secret}
        # prefix -> {length: secrets of that length}: a window costs one lookup per
        # length its prefix has, however many keys share the prefix ("sk-proj-...").
        self._by_prefix: dict[str, dict[int, frozenset[str]]] = dict(base._by_prefix) if base else {}
        new: dict[str, list[str]] = {}
        odd: list[str] = list(base._odd) if base else []
        for secret in self.all - known:
            if len(secret) >= MIN_KEY_LENGTH and not any(ch.isspace() for ch in secret):
                new.setdefault(secret[:MIN_KEY_LENGTH], []).append(secret)
            else:
                odd.append(secret)
        for prefix, found in new.items():
            by_length = {length: set(same) for length, same in self._by_prefix.get(prefix, {}).items()}
            for secret in found:
                by_length.setdefault(len(secret), set()).add(secret)
            # Longest first: when one secret begins another, the longer one is hidden whole.
            self._by_prefix[prefix] = {length: frozenset(by_length[length])
                                       for length in sorted(by_length, reverse=True)}
        self._odd: tuple[str, ...] = tuple(odd)

    def added(self, secrets: Iterable[str]) -> Secrets:
        """These secrets too (the index is copied, not built again)."""
        return Secrets(secrets, base=self)

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of every occurrence of every secret, in no particular order."""
        index, width = self._by_prefix, MIN_KEY_LENGTH
        if index:
            for run in _LONG_RUN.finditer(text):
                hits = [start for start in range(run.start(), run.end() - width + 1)
                        if text[start:start + width] in index]
                for start in hits:
                    for length, same in index[text[start:start + width]].items():
                        if text[start:start + length] in same:
                            yield start, start + length
                            break
        for secret in self._odd:
            start = text.find(secret)
            while start >= 0:
                yield start, start + len(secret)
                start = text.find(secret, start + 1)

    def redact(self, text: str) -> str:
        """The text with every stretch that belongs to a secret replaced by HIDDEN
        (overlapping secrets make one stretch: no piece of either shows)."""
        pieces: list[str] = []
        shown_to = 0
        for start, end in sorted(self.spans(text)):
            if start >= shown_to:
                pieces += (text[shown_to:start], HIDDEN)
            shown_to = max(shown_to, end)
        if not pieces:
            return text
        pieces.append(text[shown_to:])
        return "".join(pieces)


class Console:
    WIDTH = 9  # "llm-entry" — keeps the "|" column aligned

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self._out = out
        self._err = err
        self._lock = threading.Lock()
        self._hide_lock = threading.Lock()   # several threads may add secrets
        self._secrets = Secrets()

    def hide(self, *secrets: str) -> None:
        """Never print these strings, whoever wrote them."""
        new = {secret for secret in secrets if secret}
        with self._hide_lock:
            if not self._secrets.all.issuperset(new):
                self._secrets = self._secrets.added(new)

    def redact(self, text: str) -> str:
        return _KEY_HEADER.sub(r"\1***", self._secrets.redact(text))

    def line(self, source: str, text: str) -> None:
        self.line_redacted(source, self.redact(text))

    def line_redacted(self, source: str, text: str) -> None:
        """A line that went through redact() already (the log forwarder keeps it too)."""
        self._write(self._out, f"{source:<{self.WIDTH}} | {text}\n")

    def say(self, text: str) -> None:
        self.line("llm-entry", text)

    def error(self, text: str) -> None:
        """A line for stderr: failures an operator must see even if stdout is discarded."""
        self._write(self._err, f"llm-entry: {self.redact(text)}\n")

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the reader went away; keep supervising
