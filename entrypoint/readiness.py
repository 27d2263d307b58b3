"""Shows the monitor's verdict to the world: the probe files (which also
refresh the heartbeat), llm-entry's own metrics, and the lines that say when
the container became ready, stopped being ready, or is still waiting."""

from __future__ import annotations

from .config import Config
from .console import Console
from .health import Verdict
from .own_metrics import OwnMetrics
from .probe_files import ProbeFiles, on_the_way_out

PROGRESS_EVERY = 10.0


def ready_line(config: Config, after: float) -> str:
    """The line that says the container serves, and to whom."""
    group = config.group
    if group.is_worker:
        return (f"ready in {after:.1f} s: node rank {group.rank} of {group.nodes} runs its part of model "
                f"{config.served_model_name!r} for {group.leader}, which serves it")
    holders = "holders of the master key"
    if config.api_keys_file is not None:
        holders += f" or of a key in --api-keys-file {config.api_keys_file}"
    return (f"ready in {after:.1f} s: {config.local_url}/v1 serves model {config.served_model_name!r} "
            f"to {holders} (public: {config.host}:{config.port})")


class Readiness:
    def __init__(self, config: Config, probes: ProbeFiles, console: Console, metrics: OwnMetrics,
                 started: float):
        self.config = config
        self.probes = probes
        self.console = console
        self.metrics = metrics
        self.started = started
        self.ready_since: float | None = None
        self.was_ready = False
        self._last_progress = started

    def show(self, verdict: Verdict, now: float) -> None:
        """A verdict that is not fatal: ready, or what the container waits for."""
        self.probes.show(None if verdict.ready else verdict.waiting_for, None)
        self._show_in_metrics(verdict.ready, now)
        if verdict.ready and self.ready_since is None:
            self.ready_since = now
            if not self.was_ready:
                self.was_ready = True
                self.console.say(ready_line(self.config, now - self.started))
            else:
                self.console.say("ready again")
        elif not verdict.ready:
            if self.ready_since is not None:
                self.console.say(f"not ready: {verdict.waiting_for}")
                self.ready_since = None
                self._last_progress = now
            elif now - self._last_progress >= PROGRESS_EVERY:
                self.console.say(f"waiting {now - self.started:.0f} s: {verdict.waiting_for}")
                self._last_progress = now

    def _show_in_metrics(self, ready: bool, now: float) -> None:
        """The same verdict in llm-entry's metrics: at once when readiness
        changed (as the probe files), else at most once a second."""
        self.metrics.state(ready, healthy=True)
        if ready and not self.was_ready:
            self.metrics.ready_after(now - self.started)
        if ready != (self.ready_since is not None):
            self.metrics.write()
        else:
            self.metrics.write_if_due()

    def failed(self, summary: str) -> None:
        """Not ready and not healthy, with the reason, in both (if the probe
        dir still takes them: the failure may be that it does not)."""
        on_the_way_out(lambda: self.probes.show(summary, summary))
        self.metrics.state(False, healthy=False)
        self.metrics.write()

    def crashed(self, summary: str) -> None:
        """The monitor itself failed: say so where the probes look, if they still can."""
        try:
            self.probes.show(summary, summary)
        except OSError:
            pass  # the heartbeat runs out and the probes fail on their own
