"""One place that writes to the container's stdout, a line at a time.

Every line says who wrote it (`llm-entry |`, `engine |`, `proxy |`) and no
line carries a key: the redactor replaces every known key before printing,
and, as a second net for keys it does not know (a wrong key, one added to the
keys file a moment ago), the value of any key header a line shows.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import TextIO

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


class Console:
    WIDTH = 9  # "llm-entry" — keeps the "|" column aligned

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self._out = out
        self._err = err
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def hide(self, *secrets: str) -> None:
        """Never print these strings, whoever wrote them."""
        self._secrets = tuple(s for s in {*self._secrets, *secrets} if s)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _KEY_HEADER.sub(r"\1***", text)

    def line(self, source: str, text: str) -> None:
        self._write(self._out, f"{source:<{self.WIDTH}} | {self.redact(text)}\n")

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
