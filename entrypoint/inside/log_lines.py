"""Log lines are data: nothing a client sends can start a line, or make one
look like another kind of line.

- `field` is for a value from a request that goes into a line of llm-entry's
  own (a path, a method, a model name): every character that is not
  printable, every space and every backslash is written as a Python escape
  (`\\n`, `\\x20`, `\\\\`), so the value stays one token of one line, and
  `route=/a%20status=200` cannot pass for two fields.
- `OneLineFilter` is for every line the proxy's loggers print, LiteLLM's
  included: the message's control characters are escaped, and each further
  line of a record (a traceback) is indented, so that no line a record adds
  can begin as a record of its own does ("INFO entrypoint.access: ...").

Import rules: standard library only.
"""

from __future__ import annotations

import logging

_CONTINUATION = "  "


def _escaped(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if code < 0x100:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def field(text: str) -> str:
    """A request's value as one token of a log line."""
    if text.isprintable() and " " not in text and "\\" not in text:
        return text                    # the usual case, judged in C
    return "".join(_escaped(char) if char == " " or char == "\\" or not char.isprintable() else char
                   for char in text)


def one_line(text: str) -> str:
    """A message on one line: control and other non-printable characters escaped, spaces kept."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def indented(text: str) -> str:
    """Every line of a record's continuation indented, and escaped within itself."""
    return "\n".join(_CONTINUATION + one_line(line) for line in text.split("\n"))


class OneLineFilter(logging.Filter):
    """A handler's filter that keeps each record's message on its first line
    and indents everything after it (a traceback, a stack), whatever the
    handler's formatter: it rewrites the record before the formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = one_line(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = indented(_FORMATTER.formatException(record.exc_info))
        if record.stack_info and not record.stack_info.startswith(_CONTINUATION):
            record.stack_info = indented(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def keep_on_one_line(logger: logging.Logger) -> None:
    """Put the one-line rule on every handler of `logger` (LiteLLM's keep their own formats)."""
    for handler in logger.handlers:
        if not any(isinstance(found, OneLineFilter) for found in handler.filters):
            handler.addFilter(OneLineFilter())
