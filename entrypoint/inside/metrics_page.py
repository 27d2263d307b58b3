"""The one /metrics page: llm-entry's own metrics, the proxy workers' and the engine's.

Runs inside each LiteLLM proxy worker. The page is made of, in this order:
- llm-entry's own file (entrypoint.own_metrics writes it; empty until it has);
- `llm_entry_engine_metrics_up`: 1 when the engine answered for this page;
- the proxy workers' metrics, added up over every worker's files
  (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR);
- the engine's /metrics, its `vllm:*` families as they are and every other
  family prefixed with `engine_`: the engine's `process_*` and `python_gc_*`
  describe another process than anything else on the page, and two families
  of one name would make the page invalid.

Import rules: the standard library, prometheus_client and aiohttp only
(tested). LiteLLM and llm-entry's other modules are never imported here.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# What the page is: Prometheus text format 0.0.4, as every part is written.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENGINE_PREFIX = b"engine_"
ENGINE_UP = "llm_entry_engine_metrics_up"

# The start of each HELP, TYPE or sample line whose metric name does not begin
# with "vllm:". Every sample of a family begins with the family's name, so
# prefixing line by line renames a family and all its suffixes (_total,
# _bucket, _sum, _count, _created) alike.
_FOREIGN_NAME = re.compile(rb"^(# (?:HELP|TYPE|UNIT) )?(?=[A-Za-z_:])(?!vllm:)", re.MULTILINE)


def proxy_metrics_text(metrics_dir: Path) -> bytes:
    """The proxy workers' metrics, summed over the files of every worker that
    has run. Empty while the folder does not exist."""
    registry = CollectorRegistry()
    try:
        MultiProcessCollector(registry, path=str(metrics_dir))
    except ValueError:   # not a folder (yet)
        return b""
    return generate_latest(registry)


def engine_metrics_text(raw: bytes) -> bytes:
    """The engine's page with every family but `vllm:*` prefixed with `engine_`."""
    text = _FOREIGN_NAME.sub(rb"\1" + ENGINE_PREFIX, raw)
    return text if not text or text.endswith(b"\n") else text + b"\n"


def engine_up_text(up: bool) -> bytes:
    return (f"# HELP {ENGINE_UP} 1 when the engine answered its /metrics for this page, "
            f"0 when it did not (its families are then missing).\n"
            f"# TYPE {ENGINE_UP} gauge\n"
            f"{ENGINE_UP} {1.0 if up else 0.0}\n").encode()


def own_metrics_text(own_file: Path) -> bytes:
    """llm-entry's own file, or nothing while it has not been written (or cannot be read)."""
    try:
        text = own_file.read_bytes()
    except OSError:
        return b""
    return text if not text or text.endswith(b"\n") else text + b"\n"


async def fetch_engine_metrics(session: aiohttp.ClientSession, engine_url: str, engine_key: str,
                               timeout: float) -> bytes | None:
    """The engine's /metrics as it sent it, or None when it did not answer 200 within `timeout`."""
    headers = {"Authorization": f"Bearer {engine_key}", "Accept": "text/plain",
               "Accept-Encoding": "identity"}   # a session without auto-decompression gets plain text too
    try:
        async with session.get(engine_url.rstrip("/") + "/metrics", headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            return await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def metrics_page(session: aiohttp.ClientSession, engine_url: str, engine_key: str,
                       metrics_dir: Path, own_file: Path, timeout: float) -> bytes:
    """The whole page. It always comes back: a part that is missing (the engine
    not answering, llm-entry's file not written yet) is left out."""
    # Adding up the workers' files takes milliseconds for a few hundred
    # series: in a thread, so that the worker's event loop keeps streaming
    # meanwhile, and while the engine answers.
    raw, proxy_text = await asyncio.gather(fetch_engine_metrics(session, engine_url, engine_key, timeout),
                                           asyncio.to_thread(proxy_metrics_text, metrics_dir))
    parts = [own_metrics_text(own_file), engine_up_text(raw is not None), proxy_text]
    if raw is not None:
        parts.append(engine_metrics_text(raw))
    return b"".join(parts)
