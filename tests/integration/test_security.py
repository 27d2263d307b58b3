"""Keys and exposure: only key holders get answers, keys from the file open
only the model routes, the engine is reachable on loopback with its own key
only, keys rotate through a Kubernetes-style secret volume and on SIGHUP, and
no key leaks into argv, logs or files (issue: keys and exposure)."""

import os
import signal
import stat
import time
from pathlib import Path

import pytest
import requests

from bench.procs import descendants, environment_of, wait_for

from harness import MASTER_KEY, WRONG_KEY, Entry

FILE_KEY_A = "team-a-" + "5d1c9e7b3a8f2c6e4b0d9a7c"
FILE_KEY_B = "team-b-" + "8e2f6a0c4d9b1e7a3c5f2d8b"
ROTATED_KEY = "team-c-" + "1a7e4c9b2d6f0a3e8c5b7d9f"


def publish(secret_dir: Path, text: str) -> None:
    """What the kubelet does to update a Secret volume: write the new files in a
    fresh timestamped folder, point `..data` at it by an atomic rename of a
    symlink, remove the old folder. The key file itself is a symlink through `..data`."""
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    (secret_dir / stamp).mkdir()
    (secret_dir / stamp / "api-keys").write_text(text)
    data = secret_dir / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    (secret_dir / "..data_tmp").symlink_to(stamp)
    os.replace(secret_dir / "..data_tmp", data)
    if not (secret_dir / "api-keys").is_symlink():
        (secret_dir / "api-keys").symlink_to("..data/api-keys")
    if old is not None:
        (secret_dir / old / "api-keys").unlink()
        (secret_dir / old).rmdir()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    secret_dir = tmp / "secret"
    secret_dir.mkdir()
    publish(secret_dir, f"# team A\n{FILE_KEY_A}\n\n{FILE_KEY_B}  \n")
    # The engine double logs every request it gets: a way to put a key in a log line.
    entry = Entry(tmp, args=["--api-keys-file", str(secret_dir / "api-keys")],
                  env={"ENGINE_DOUBLE_LOG_REQUESTS": "1"}).start()
    try:
        entry.wait_ready()
        entry.secret_dir = secret_dir
        entry.keys_file = secret_dir / "api-keys"
        yield entry
    finally:
        entry.kill_everything()


MODEL_ROUTES = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", "chat"),
    ("POST", "/v1/chat/completions", "chat-stream"),
    ("POST", "/v1/completions", "completion"),
    ("POST", "/v1/embeddings", "embedding"),
    ("GET", "/models", None),
    ("POST", "/chat/completions", "chat"),
    ("POST", "/completions", "completion"),
    ("POST", "/embeddings", "embedding"),
]

BAD_CREDENTIALS = {
    "no key": {},
    "wrong key": {"Authorization": f"Bearer {WRONG_KEY}"},
    "basic scheme": {"Authorization": f"Basic {MASTER_KEY}"},
    "bearer with empty value": {"Authorization": "Bearer "},
    "bare key without scheme": {"Authorization": MASTER_KEY},
    "wrong x-api-key": {"x-api-key": WRONG_KEY},
    "master key plus a wrong second header": {"Authorization": f"Bearer {MASTER_KEY}", "x-api-key": WRONG_KEY},
}


def body_for(kind, model):
    return {
        None: None,
        "chat": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        "chat-stream": {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        "completion": {"model": model, "prompt": "hi"},
        "embedding": {"model": model, "input": "hi"},
    }[kind]


def call(entry, method, path, kind, headers, query=""):
    return requests.request(method, entry.url(path) + query, headers=headers, timeout=30,
                            json=body_for(kind, entry.served_model_name))


@pytest.mark.parametrize("method,path,kind", MODEL_ROUTES)
@pytest.mark.parametrize("variant", sorted(BAD_CREDENTIALS))
def test_bad_credentials_get_401_json_on_every_model_route(guarded, method, path, kind, variant):
    response = call(guarded, method, path, kind, BAD_CREDENTIALS[variant])
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "401" and error["message"]
    assert MASTER_KEY not in response.text and WRONG_KEY not in response.text


@pytest.mark.parametrize("method,path,kind", MODEL_ROUTES[:5])
def test_key_in_the_query_string_does_not_authenticate(guarded, method, path, kind):
    for name in ("api_key", "key"):
        response = call(guarded, method, path, kind, {}, query=f"?{name}={MASTER_KEY}")
        assert response.status_code == 401


@pytest.mark.parametrize("method,path,kind", MODEL_ROUTES)
@pytest.mark.parametrize("header", ["bearer-master", "bearer-file-key", "x-api-key", "api-key"])
def test_good_keys_get_answers_on_every_model_route(guarded, method, path, kind, header):
    headers = {
        "bearer-master": {"Authorization": f"Bearer {MASTER_KEY}"},
        "bearer-file-key": {"Authorization": f"Bearer {FILE_KEY_B}"},
        "x-api-key": {"x-api-key": MASTER_KEY},
        "api-key": {"api-key": FILE_KEY_B},
    }[header]
    response = call(guarded, method, path, kind, headers)
    assert response.status_code == 200, response.text


ADMIN_ROUTES = [
    ("POST", "/key/generate", {}),
    ("POST", "/user/new", {}),
    ("POST", "/team/new", {}),
    ("POST", "/model/new", {"model_name": "mine", "litellm_params": {"model": "openai/mine"}}),
    ("POST", "/model/delete", {"id": "anything"}),
    ("GET", "/key/list", None),
    ("GET", "/user/list", None),
    ("GET", "/model/info", None),
    ("POST", "/config/update", {}),
    ("GET", "/health", None),
]


@pytest.mark.parametrize("method,path,body", ADMIN_ROUTES)
def test_keys_from_the_file_get_no_admin_routes(guarded, method, path, body):
    publish(guarded.secret_dir, f"{FILE_KEY_A}\n{FILE_KEY_B}\n")
    wait_for(lambda: call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_A)).status_code == 200,
             15, "the file key to work", poll=0.2)
    response = requests.request(method, guarded.url(path), json=body, headers=guarded.headers(FILE_KEY_A),
                                timeout=30)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["message"]
    assert FILE_KEY_A not in response.text


def test_the_master_key_still_reaches_management_routes(guarded):
    response = requests.get(guarded.url("/model/info"), headers=guarded.headers(MASTER_KEY), timeout=30)
    assert response.status_code == 200, response.text


def test_health_routes_stay_open_and_reveal_no_key(guarded):
    for path in ("/health/liveliness", "/health/readiness"):
        response = requests.get(guarded.url(path), timeout=30)
        assert response.status_code == 200
        assert MASTER_KEY not in response.text and FILE_KEY_A not in response.text


def test_engine_listens_on_loopback_only(guarded):
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == guarded.engine_port:
                listening.append(address)
    assert listening == ["0100007F"], listening  # 127.0.0.1, nothing else


def test_engine_refuses_requests_without_the_internal_key(guarded):
    url = f"http://127.0.0.1:{guarded.engine_port}/v1/models"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers=guarded.headers(MASTER_KEY), timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {guarded.engine_key()}"},
                        timeout=10).status_code == 200


def test_no_key_on_any_command_line(guarded):
    secrets = [MASTER_KEY, FILE_KEY_A, FILE_KEY_B, guarded.engine_key()]
    pids = descendants(guarded.pid) | {guarded.pid}
    assert len(pids) >= 4  # llm-entry, supervisord, engine (+ workers), proxy
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for secret in secrets:
            assert secret not in cmdline, f"a key is on the command line of pid {pid}"


def test_engine_does_not_inherit_the_proxys_keys(guarded):
    environ = environment_of(guarded.program_pid("engine"))
    assert MASTER_KEY not in environ.values()
    assert "LLM_ENTRY_API_KEYS_FILE" not in environ


def test_no_key_in_the_logs(guarded):
    guarded.chat("log me")
    call(guarded, "GET", "/v1/models", None, {"Authorization": f"Bearer {WRONG_KEY}"})
    text = guarded.output()
    for secret in (MASTER_KEY, FILE_KEY_A, FILE_KEY_B, guarded.engine_key(), WRONG_KEY):
        assert secret not in text


def test_rendered_files_are_private_and_hold_no_key(guarded):
    run_dir = guarded.run_dir()
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    files = [p for p in run_dir.iterdir() if p.is_file()]
    assert {"litellm.yaml", "supervisord.conf"} <= {p.name for p in files}
    for path in files:
        if path.suffix in (".yaml", ".conf", ".py", ".json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        text = path.read_text(errors="replace")
        for secret in (MASTER_KEY, FILE_KEY_A, guarded.engine_key()):
            assert secret not in text, path


def test_a_kubernetes_secret_rotation_is_picked_up_and_the_new_key_is_hidden_in_logs(guarded):
    publish(guarded.secret_dir, f"{FILE_KEY_A}\n{FILE_KEY_B}\n")
    engine_before = guarded.program_pid("engine")
    publish(guarded.secret_dir, f"# rotated\n{ROTATED_KEY}\n{FILE_KEY_B}\n")
    wait_for(lambda: call(guarded, "GET", "/v1/models", None, guarded.headers(ROTATED_KEY)).status_code == 200,
             15, "the rotated-in key to work", poll=0.2)
    assert call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_A)).status_code == 401
    assert guarded.program_pid("engine") == engine_before
    # The engine double logs the path it was asked for, query string included.
    requests.get(f"http://127.0.0.1:{guarded.engine_port}/v1/models?leak={ROTATED_KEY}", timeout=10)
    wait_for(lambda: "/v1/models?leak=" in guarded.output(), 15, "the engine to log the request")
    assert ROTATED_KEY not in guarded.output()
    assert "/v1/models?leak=***" in guarded.output()


def test_a_weak_key_added_to_the_file_is_refused_and_named_by_line(guarded):
    weak = "short-key-42"
    publish(guarded.secret_dir, f"{FILE_KEY_B}\n# new team\n{weak}\n")
    wait_for(lambda: "the key on line 3 of the API keys file" in guarded.output(), 15,
             "the proxy to warn about the weak key", poll=0.2)
    assert call(guarded, "GET", "/v1/models", None, guarded.headers(weak)).status_code == 401
    assert call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_B)).status_code == 200
    assert "is shorter than 16 characters: it is not accepted" in guarded.output()
    assert weak not in guarded.output()


def test_sighup_reads_the_keys_file_again_at_once(guarded):
    publish(guarded.secret_dir, f"{FILE_KEY_A}\n")
    wait_for(lambda: call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_A)).status_code == 200,
             15, "the file key to work", poll=0.2)
    # Rewrite in place with a key of the same length and put the time back
    # (as `cp -p` would): inode, size and time are unchanged, so only SIGHUP
    # can tell the proxy to read the file again.
    target = guarded.keys_file.resolve()
    before = target.stat()
    target.write_text(f"{ROTATED_KEY}\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and target.stat().st_ino == before.st_ino
    guarded.send(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: read --api-keys-file again (1 key)" in guarded.output(), 15, "llm-entry to say so")
    assert call(guarded, "GET", "/v1/models", None, guarded.headers(ROTATED_KEY)).status_code == 200
    assert call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_A)).status_code == 401
    assert guarded.process.poll() is None and guarded.ready()
    assert ROTATED_KEY not in guarded.output()


def test_a_key_removed_from_the_file_stops_working_without_a_restart(guarded):
    publish(guarded.secret_dir, f"{FILE_KEY_A}\n{FILE_KEY_B}\n")
    wait_for(lambda: call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_A)).status_code == 200,
             15, "the file key to work", poll=0.2)
    headers = {"Authorization": f"Bearer {FILE_KEY_A}"}
    assert call(guarded, "GET", "/v1/models", None, headers).status_code == 200
    engine_before = guarded.program_pid("engine")
    guarded.keys_file.write_text(f"{FILE_KEY_B}\n")
    wait_for(lambda: call(guarded, "GET", "/v1/models", None, headers).status_code == 401, 15,
             "the removed key to be refused", poll=0.2)
    assert call(guarded, "GET", "/v1/models", None, {"Authorization": f"Bearer {FILE_KEY_B}"}).status_code == 200
    assert guarded.program_pid("engine") == engine_before


def test_sighup_does_not_stop_llm_entry_and_the_run_folder_is_removed_at_exit(entry_factory):
    entry = entry_factory().start()
    entry.wait_ready()
    run_dir = entry.run_dir()
    entry.send(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: there is no --api-keys-file to read again" in entry.output(), 15,
             "llm-entry to take the SIGHUP")
    assert entry.process.poll() is None and entry.ready() and run_dir.exists()
    assert entry.stop() == 0
    assert not run_dir.exists()
    entry.assert_nothing_left()


REJECTIONS = [
    # (method, path, headers, the reason the log line gives); 20 in all.
    *[("POST", "/v1/chat/completions", {}, "no key")] * 4,
    *[("POST", "/completions", {"Authorization": f"Bearer {WRONG_KEY}"}, "wrong key")] * 4,
    *[("GET", "/v1/models", {"x-api-key": WRONG_KEY}, "wrong key")] * 4,
    *[("GET", "/v1/models", {"Authorization": f"Basic {MASTER_KEY}"}, "malformed Authorization header")] * 4,
    *[("GET", "/key/list", {"Authorization": f"Bearer {FILE_KEY_A}"},
       "a keys-file key on a route for the master key only")] * 4,
]


def proxy_lines_since(entry, mark: int) -> list[str]:
    return [line for line in entry.out_path.read_text(errors="replace")[mark:].splitlines()
            if line.startswith("proxy     | ")]


def test_twenty_rejected_requests_make_twenty_warning_lines_and_no_error(guarded):
    publish(guarded.secret_dir, f"{FILE_KEY_A}\n{FILE_KEY_B}\n")
    wait_for(lambda: call(guarded, "GET", "/v1/models", None, guarded.headers(FILE_KEY_A)).status_code == 200,
             15, "the file key to work", poll=0.2)
    mark = len(guarded.out_path.read_text(errors="replace"))
    for method, path, headers, _ in REJECTIONS:
        body = body_for("chat" if "chat" in path else "completion", guarded.served_model_name) \
            if method == "POST" else None
        assert requests.request(method, guarded.url(path), json=body, headers=headers,
                                timeout=30).status_code in (401, 403)
    expected = [f"proxy     | WARNING entrypoint.inside.refusals: refused {method} {path} from 127.0.0.1: {reason}"
                for method, path, _, reason in REJECTIONS]
    wait_for(lambda: len([line for line in proxy_lines_since(guarded, mark) if "refused" in line]) >= 20, 30,
             "twenty refusals in the log", poll=0.2)
    lines = proxy_lines_since(guarded, mark)
    assert [line for line in lines if "refused" in line] == expected
    assert not [line for line in lines if "ERROR" in line or "Requester IP" in line], lines
