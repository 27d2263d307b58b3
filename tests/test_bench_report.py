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
