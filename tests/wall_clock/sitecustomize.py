"""A wall clock the test moves, for every Python process of an llm-entry run
started with this folder first on PYTHONPATH and WALL_CLOCK_OFFSET_FILE set
(tests/integration/test_quotas.py): time.time() runs the file's number of
seconds ahead of the real clock, read again whenever the file changes. The
monotonic clock, sleeps and timers are left alone.

Test-only, and nothing in llm-entry knows of it. libfaketime was the first
choice, but the one in Debian (0.9.10) either moves the monotonic clock with
the wall clock (every deadline and timer of llm-entry, uvicorn and aiohttp
would fire at the jump) or, with FAKETIME_DONT_FAKE_MONOTONIC=1, makes
Python's time.sleep fail with EINVAL (its clock_nanosleep on CLOCK_MONOTONIC).
"""

import os
import time

_path = os.environ.get("WALL_CLOCK_OFFSET_FILE")

if _path:
    _real_time = time.time
    _seen: list = [None, 0.0]      # (the file's mtime and size), the offset it holds

    def _offset() -> float:
        try:
            status = os.stat(_path)
        except OSError:
            return _seen[1]
        signature = (status.st_mtime_ns, status.st_size, status.st_ino)
        if signature != _seen[0]:
            try:
                with open(_path) as file:
                    _seen[1] = float(file.read().strip() or 0)
            except (OSError, ValueError):
                return _seen[1]
            _seen[0] = signature
        return _seen[1]

    def _time() -> float:
        return _real_time() + _offset()

    time.time = _time
