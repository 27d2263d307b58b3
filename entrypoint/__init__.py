"""llm-entry: serve a model with vLLM behind a LiteLLM proxy that requires a key.

Signals from the first instant: when this process is llm-entry itself (its
console script, or `python -m entrypoint.cli`), SIGTERM, SIGINT and SIGHUP
are only recorded from the moment this package is imported, before any other
import, so that none of them can kill llm-entry half way through its start
(SIGHUP's default action would). entrypoint.signals.SignalQueue takes over
what was recorded. In the proxy's and the engine's interpreters, which import
this package too, the handlers stay theirs (uvicorn and vLLM install their
own). Standard library only, a few lines: everything imports this first.
"""

import os as _os
import signal as _signal
import sys as _sys

__version__ = "0.1.0"

EARLY_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)
early_signals: list[int] = []   # what came before SignalQueue.install, in order


def is_llm_entry(argv: list[str], orig_argv: list[str]) -> bool:
    """Whether this interpreter runs llm-entry's command line: the console
    script `llm-entry`, or `python -m entrypoint.cli` (while a -m module is
    imported, argv[0] is "-m"; orig_argv keeps the module's name)."""
    if argv and _os.path.basename(argv[0]) == "llm-entry":
        return True
    words = iter(orig_argv[1:])
    for word in words:
        if word.startswith("-m"):
            return (word[2:] or next(words, "")) in ("entrypoint", "entrypoint.cli")
        if word in ("-W", "-X"):
            next(words, None)   # the option's own argument
        elif not word.startswith("-") or word == "-c":
            return False        # a script or a command: not us
    return False


def _record(signum, frame) -> None:
    early_signals.append(signum)


if is_llm_entry(_sys.argv, getattr(_sys, "orig_argv", [])):
    for _sig in EARLY_SIGNALS:
        _signal.signal(_sig, _record)
