"""The benchmark report renders every section from results, including the
parts the quick run skips (the real engine's time to ready)."""

import math

from bench import report
from bench.chart import render as render_chart
from bench.settings import Settings
from bench.startup_real import RealStartupResults


def full_run_with_only_the_real_engine() -> report.Run:
    real = RealStartupResults(rounds=2, engine="vLLM CPU build, demo model")
    real.times = {"llm-entry": [33.0, 37.6], "baseline": [41.2, 40.3], "engine alone": [28.6, math.nan]}
    return report.Run(settings=Settings.full(), command="python -m bench", machine={"CPUs (nproc)": "2"},
                      versions={"python": "3"}, started="now", real_startup=real)


def test_the_real_engine_section_goal_and_chart_panel_render():
    run = full_run_with_only_the_real_engine()
    text = report.render(run, "results.svg")
    assert "### With the real engine" in text
    assert "time to ready, real vLLM CPU engine: llm-entry over the engine alone" in text
    panels = report.panels(run)
    assert [panel.title for panel in panels] == ["1b. Time to ready, real vLLM CPU engine"]
    assert render_chart(panels, "title").startswith("<svg")


def test_overhead_over_the_engine_alone_is_taken_per_round():
    overheads = full_run_with_only_the_real_engine().real_startup.overheads("llm-entry")
    assert overheads[0] == 33.0 - 28.6
    assert math.isnan(overheads[1])


def test_a_reaction_a_few_ms_over_its_tick_counted_worst_case_is_met_and_one_far_over_is_not():
    from bench.reaction import over_worst, within_worst
    assert within_worst([0.15, 0.207], 0.20) is True      # 7 ms over: a tick's own work, the 10 ms watch
    assert within_worst([0.15, 0.26], 0.20) is False
    assert within_worst([], 0.20) is None
    assert over_worst([0.26], 0.20) == "60 ms at worst"


def test_the_request_path_sections_and_goals_render_from_results():
    from bench.cost import CostCell, CostResults
    from bench.overhead import OverheadResults
    from bench.vllm_client import ClientResults, Load

    cost = CostResults(concurrency=16, tokens_per_stream=200, cells={
        "llm-entry": CostCell([0.3, 0.4], [0.004, 0.006], [0.5, 0.5], [0.02, 0.02], 100, 10, 2000),
        "LiteLLM's chat route": CostCell([11.0, 12.0], [0.9, 1.0], [0.5, 0.5], [0.02, 0.02], 50, 5, 1000),
    }, routes={"/v1/chat/completions": [0.5, 0.6], "/v1/responses": [0.6, 0.9], "/v1/messages": [1.5, 1.8]})
    client = ClientResults(load=Load(), rounds=2, throughput={"proxy": [1.9, 2.0], "direct": [2.0, 2.0]},
                           ttft_median_ms={"proxy": [110.0, 104.0], "direct": [100.0, 100.0]},
                           tpot_median_ms={"proxy": [30.0, 31.0], "direct": [30.0, 30.0]},
                           failed={"proxy": [0, 0], "direct": [0, 0]})
    run = report.Run(settings=Settings.full(), command="python -m bench", machine={}, versions={}, started="now",
                     overhead=OverheadResults(cost=cost), vllm_client=client)
    text = report.render(run, "results.svg")
    assert "### The request path: CPU per request and per streamed chunk" in text
    assert "LiteLLM's chat route spends 33 (30–37)× the CPU of llm-entry per request" in text
    assert "### The real engine under vLLM's own benchmark client" in text
    goals = {goal.name: goal for goal in report.goals(run)}
    assert goals["proxy CPU per streamed chunk (llm-entry)"].ok is True
    assert goals["proxy CPU per non-streamed request (llm-entry)"].measured == "0.35 (0.30–0.40) ms"
    assert goals["real engine, vLLM's client, c=8: throughput proxy / direct"].measured == "0.975 (0.950–1.000)"
    assert goals["real engine, vLLM's client, c=8: added median TTFT"].ok is True
    assert "| `/v1/responses` | 0.75 (0.60–0.90) | 1.35 (1.20–1.50) |" in text
    assert goals["proxy CPU per request, /v1/responses / relayed chat"].ok is True
    assert goals["proxy CPU per request, /v1/messages / relayed chat"].ok is False


def test_profile_frames_of_llm_entrys_own_modules_are_named_from_the_repo_root():
    from bench.profile import REPO_ROOT, package_of, short_frame
    frame = f"ModelRelay._relay ({REPO_ROOT}/entrypoint/inside/proxy_relay.py:175)"
    assert short_frame(frame) == "ModelRelay._relay (entrypoint/inside/proxy_relay.py:175)"
    assert package_of(f"{REPO_ROOT}/entrypoint/inside/proxy_relay.py") == "llm-entry (relay, key check)"
