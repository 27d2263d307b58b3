"""The one /metrics page: the engine's page renamed, the proxy workers' files
added up, llm-entry's own file, and a page that comes back whatever answers."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import free_port
from entrypoint.inside import metrics_page as page_module
from entrypoint.inside.metrics_page import (
    ENGINE_UP,
    engine_metrics_text,
    metrics_page,
    own_metrics_text,
    proxy_metrics_text,
)
from entrypoint.own_metrics import OwnMetrics

from repo_paths import DATA, REPO

VLLM_PAGE = DATA / "vllm_metrics.txt"
ENGINE_KEY = "internal-engine-key-0123456789"

# One proxy worker: what LiteLLM's prometheus callback does, in miniature.
WORKER = """
import sys
from prometheus_client import Counter, Histogram
requests = Counter("litellm_proxy_total_requests_metric", "Total requests", ["api_key_alias", "route"])
latency = Histogram("litellm_request_total_latency_metric", "Latency", ["api_key_alias"], buckets=(0.1, 1.0))
for _ in range(int(sys.argv[1])):
    requests.labels("team-a", "/v1/chat/completions").inc()
    latency.labels("team-a").observe(0.5)
"""


def family_names(page: bytes) -> list[str]:
    return [family.name for family in text_string_to_metric_families(page.decode())]


def samples_of(page: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page.decode()) for s in family.samples}


def assert_no_family_twice(page: bytes) -> None:
    twice = [name for name, count in Counter(family_names(page)).items() if count > 1]
    assert twice == []


def run_worker(metrics_dir: Path, requests: int) -> None:
    result = subprocess.run([sys.executable, "-c", WORKER, str(requests)], capture_output=True, text=True,
                            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def workers_dir(tmp_path_factory) -> Path:
    """The files of two proxy workers that served 3 and 4 requests."""
    folder = tmp_path_factory.mktemp("metrics")
    run_worker(folder, 3)
    run_worker(folder, 4)
    return folder


@pytest.fixture
def own_file(tmp_path) -> Path:
    metrics = OwnMetrics(tmp_path / "llm-entry.prom", ("engine", "proxy"))
    metrics.state(ready=True, healthy=True)
    metrics.ready_after(12.0)
    metrics.checked("engine", True, 0.004)
    metrics.write()
    return metrics.path


# -- the engine's page, renamed ---------------------------------------------------------
def test_vllm_families_keep_their_names_and_every_other_family_gets_the_engine_prefix():
    raw = VLLM_PAGE.read_bytes()
    before = list(text_string_to_metric_families(raw.decode()))
    after = list(text_string_to_metric_families(engine_metrics_text(raw).decode()))
    assert [f.name if f.name.startswith("vllm:") else "engine_" + f.name for f in before] == [f.name for f in after]
    assert any(f.name.startswith("engine_process_") for f in after)
    assert any(f.name.startswith("engine_python_gc_") for f in after)
    for old, new in zip(before, after, strict=False):
        prefix = "" if old.name.startswith("vllm:") else "engine_"
        assert (old.type, old.documentation) == (new.type, new.documentation)
        assert [(prefix + s.name, s.labels, s.value) for s in old.samples] == \
               [(s.name, s.labels, s.value) for s in new.samples]


def test_help_type_and_every_histogram_and_summary_suffix_are_renamed():
    lines = engine_metrics_text(VLLM_PAGE.read_bytes()).decode().splitlines()
    assert "# HELP engine_process_resident_memory_bytes Resident memory size in bytes." in lines
    assert "# TYPE engine_process_resident_memory_bytes gauge" in lines
    assert "# TYPE engine_python_gc_objects_collected_total counter" in lines
    for start in ("engine_http_request_duration_seconds_bucket{", "engine_http_request_duration_seconds_sum{",
                  "engine_http_request_duration_seconds_count{", "engine_http_request_size_bytes_sum{",
                  "engine_http_request_size_bytes_count{", "engine_http_requests_created{",
                  "engine_http_request_duration_highr_seconds_created ",
                  "vllm:time_to_first_token_seconds_bucket{", "vllm:time_to_first_token_seconds_created{",
                  "# TYPE vllm:time_to_first_token_seconds histogram", "vllm:num_requests_running{",
                  "vllm:kv_cache_usage_perc{"):
        assert any(line.startswith(start) for line in lines), start
    for line in lines:
        name = line.split(" ")[2] if line.startswith("# ") else line
        assert name.startswith(("vllm:", "engine_")), line


def test_an_engine_page_without_a_final_newline_gets_one():
    assert engine_metrics_text(b"# TYPE up gauge\nup 1") == b"# TYPE engine_up gauge\nengine_up 1\n"
    assert engine_metrics_text(b"") == b""


def test_comments_that_are_not_help_or_type_stay_as_they_are():
    assert engine_metrics_text(b"# a note\nvllm:x 1\n") == b"# a note\nvllm:x 1\n"


# -- the proxy workers' files ---------------------------------------------------------------
def test_the_proxy_part_adds_up_every_workers_files(workers_dir):
    samples = samples_of(proxy_metrics_text(workers_dir))
    route = (("api_key_alias", "team-a"), ("route", "/v1/chat/completions"))
    assert samples[("litellm_proxy_total_requests_metric_total", route)] == 7
    assert samples[("litellm_request_total_latency_metric_count", (("api_key_alias", "team-a"),))] == 7
    assert samples[("litellm_request_total_latency_metric_bucket",
                    (("api_key_alias", "team-a"), ("le", "1.0")))] == 7


def test_a_missing_workers_folder_gives_an_empty_part(tmp_path):
    assert proxy_metrics_text(tmp_path / "not-there") == b""


def test_a_missing_own_file_gives_an_empty_part(tmp_path):
    assert own_metrics_text(tmp_path / "llm-entry.prom") == b""


# -- the whole page -----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def engine_serving(handler):
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def relay_like_session() -> aiohttp.ClientSession:
    """A session made as the relay makes its own: no decompression, no default headers."""
    return aiohttp.ClientSession(auto_decompress=False, trust_env=False,
                                 skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))


def test_the_page_holds_all_three_parts_once_each_and_the_engine_got_the_key(workers_dir, own_file):
    seen_headers = []

    async def metrics(request):
        seen_headers.append(request.headers)
        return web.Response(body=VLLM_PAGE.read_bytes(), content_type="text/plain")

    async def scrape():
        async with engine_serving(metrics) as url, relay_like_session() as session:
            return await metrics_page(session, url, ENGINE_KEY, workers_dir, own_file, timeout=5.0)

    page = asyncio.run(scrape())
    assert_no_family_twice(page)
    names = set(family_names(page))
    assert {"llm_entry_ready", "llm_entry_seconds_to_ready", "llm_entry_check_seconds", ENGINE_UP,
            "litellm_proxy_total_requests_metric", "vllm:time_to_first_token_seconds",
            "engine_process_resident_memory_bytes", "engine_python_gc_objects_collected"} <= names
    samples = samples_of(page)
    assert samples[(ENGINE_UP, ())] == 1 and samples[("llm_entry_ready", ())] == 1
    assert seen_headers[0]["Authorization"] == f"Bearer {ENGINE_KEY}"
    assert ENGINE_KEY.encode() not in page


def test_with_no_engine_listening_the_page_still_comes_back_with_engine_up_0(workers_dir, own_file):
    async def scrape():
        async with relay_like_session() as session:
            return await metrics_page(session, f"http://127.0.0.1:{free_port()}", ENGINE_KEY, workers_dir,
                                      own_file, timeout=5.0)

    page = asyncio.run(scrape())
    assert_no_family_twice(page)
    samples = samples_of(page)
    assert samples[(ENGINE_UP, ())] == 0 and samples[("llm_entry_ready", ())] == 1
    assert "litellm_proxy_total_requests_metric" in family_names(page)
    assert not any(name.startswith(("vllm:", "engine_")) for name in family_names(page))


def test_an_engine_that_does_not_answer_in_time_costs_one_timeout(workers_dir, own_file):
    release = asyncio.Event()

    async def stuck(request):
        await release.wait()
        return web.Response(body=VLLM_PAGE.read_bytes(), content_type="text/plain")

    async def scrape():
        async with engine_serving(stuck) as url, relay_like_session() as session:
            started = time.monotonic()
            page = await metrics_page(session, url, ENGINE_KEY, workers_dir, own_file, timeout=0.3)
            release.set()
            return page, time.monotonic() - started

    page, took = asyncio.run(scrape())
    assert samples_of(page)[(ENGINE_UP, ())] == 0
    assert took < 2.0


def test_an_engine_that_answers_an_error_counts_as_not_answering(workers_dir, own_file):
    async def failing(request):
        return web.Response(status=500, text="Internal Server Error")

    async def scrape():
        async with engine_serving(failing) as url, relay_like_session() as session:
            return await metrics_page(session, url, ENGINE_KEY, workers_dir, own_file, timeout=5.0)

    page = asyncio.run(scrape())
    assert samples_of(page)[(ENGINE_UP, ())] == 0
    assert b"Internal Server Error" not in page


def test_before_llm_entry_has_written_its_file_the_page_has_the_other_parts(workers_dir, tmp_path):
    async def metrics(request):
        return web.Response(body=VLLM_PAGE.read_bytes(), content_type="text/plain")

    async def scrape():
        async with engine_serving(metrics) as url, relay_like_session() as session:
            return await metrics_page(session, url, ENGINE_KEY, workers_dir, tmp_path / "llm-entry.prom", 5.0)

    page = asyncio.run(scrape())
    assert_no_family_twice(page)
    names = family_names(page)
    assert ENGINE_UP in names and "vllm:num_requests_running" in names
    assert not any(name.startswith("llm_entry_") and name != ENGINE_UP for name in names)


# -- import rules ---------------------------------------------------------------------------
def test_the_module_imports_only_the_standard_library_prometheus_client_and_aiohttp():
    tree = ast.parse(Path(page_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    assert imported - set(sys.stdlib_module_names) == {"aiohttp", "prometheus_client"}


def test_importing_it_loads_neither_litellm_nor_llm_entrys_other_modules():
    code = ("import sys, entrypoint.inside.metrics_page; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'entrypoint')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['entrypoint', 'entrypoint.inside', 'entrypoint.inside.metrics_page']"
