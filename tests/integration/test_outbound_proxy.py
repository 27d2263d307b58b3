"""A proxy variable set for the container's outbound traffic (HTTP_PROXY and
friends, without NO_PROXY) must never carry loopback traffic: not llm-entry's
health checks (they hold the master key), not the proxy's calls to the engine
(prompts and the internal key)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import Entry


class Recorder(BaseHTTPRequestHandler):
    """An outbound proxy that answers nothing but records who asked."""

    seen: list[str] = []

    def _record(self):
        Recorder.seen.append(f"{self.command} {self.path}")
        self.send_error(502, "this proxy forwards nothing")

    do_GET = do_POST = do_CONNECT = do_PUT = do_DELETE = do_HEAD = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def outbound_proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_variables_do_not_capture_the_checks_or_the_engine_traffic(tmp_path, outbound_proxy):
    proxy_env = {name: outbound_proxy for name in
                 ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}
    proxy_env.update({"NO_PROXY": "", "no_proxy": ""})
    entry = Entry(tmp_path, env=proxy_env).start()
    try:
        entry.wait_ready()  # the checks reached both programs directly
        answer = entry.chat("through the proxy, straight to the engine")
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        assert Recorder.seen == [], "loopback traffic went to the outbound proxy"
        assert entry.stop() == 0
        entry.assert_nothing_left()
    finally:
        entry.kill_everything()
