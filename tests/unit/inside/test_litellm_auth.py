"""Unit tests of what LiteLLM's custom auth (proxy_authenticator) hands to
LiteLLM: llm-entry's id for the caller, never the key, and LiteLLM's own
error for a refusal.

proxy_authenticator needs litellm, which takes seconds to import: only these
tests import it.
"""

from __future__ import annotations

import asyncio

import pytest

from entrypoint.inside.key_ring import MASTER_KEY_LABEL, KeyRing
from entrypoint.inside.keys_file import default_key_name
from entrypoint.inside.litellm_auth import proxy_authenticator

from fakes import FakeClock

MASTER = "sk-master-0123456789"
KEY_A = "key-alpha-7f3c9e2a"
KEY_B = "sk-key-bravo-91d2"


@pytest.fixture(scope="module")
def authenticate(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        # What llm-entry sets for the proxy: nothing fetched from the internet at import.
        patch.setenv("LITELLM_OFFLINE_MODE", "true")
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        pytest.importorskip("litellm")
        keys_file = tmp_path_factory.mktemp("secrets") / "api-keys"
        keys_file.write_text(f"{KEY_A} name=team-a rpm=5 tpm=1000 max_parallel=2\n{KEY_B}\n")
        ring = KeyRing(MASTER, keys_file, clock=FakeClock(1000.0))
        yield proxy_authenticator(ring, reaches_model=lambda route: route.startswith("/v1/"))


def request_with(key: str, path: str = "/v1/chat/completions"):
    from starlette.requests import Request

    return Request({"type": "http", "method": "POST", "path": path, "root_path": "", "query_string": b"",
                    "headers": [(b"authorization", f"Bearer {key}".encode())], "client": ("10.0.0.7", 50000)})


def authenticated(authenticate, key: str, path: str = "/v1/chat/completions"):
    return asyncio.run(authenticate(request_with(key, path), key))


def test_a_file_key_reaches_litellm_under_its_name_and_never_as_the_key(authenticate) -> None:
    auth = authenticated(authenticate, KEY_A)
    assert (auth.api_key, auth.key_alias, auth.user_role.value) == (
        "llm-entry-key-team-a", "team-a", "internal_user")
    assert KEY_A not in auth.model_dump_json() and KEY_A not in repr(auth)


def test_a_file_keys_limits_are_not_handed_to_litellms_own_limiter(authenticate) -> None:
    auth = authenticated(authenticate, KEY_A)
    assert (auth.rpm_limit, auth.tpm_limit, auth.max_parallel_requests) == (None, None, None)


def test_a_bare_file_key_reaches_litellm_under_its_default_name(authenticate) -> None:
    auth = authenticated(authenticate, KEY_B)
    assert (auth.api_key, auth.key_alias) == ("llm-entry-key-" + default_key_name(KEY_B), default_key_name(KEY_B))
    assert KEY_B not in auth.model_dump_json()


def test_the_master_key_reaches_litellm_as_the_master_label(authenticate) -> None:
    auth = authenticated(authenticate, MASTER, "/key/generate")
    assert (auth.api_key, auth.key_alias, auth.user_role.value) == (MASTER_KEY_LABEL, "master", "proxy_admin")
    assert MASTER not in auth.model_dump_json()


def test_a_file_key_on_a_route_for_the_master_key_only_gets_403(authenticate) -> None:
    from litellm.proxy._types import ProxyException

    with pytest.raises(ProxyException) as caught:
        authenticated(authenticate, KEY_A, "/key/generate")
    assert caught.value.code == "403"


def test_a_wrong_key_gets_401_without_the_key_in_the_answer(authenticate) -> None:
    from litellm.proxy._types import ProxyException

    with pytest.raises(ProxyException) as caught:
        authenticated(authenticate, "sk-wrong-0123456789abcdef")
    assert caught.value.code == "401"
    assert "sk-wrong-0123456789abcdef" not in str(caught.value.message)


def test_a_refusal_asks_for_a_bearer_key_only_when_it_is_a_401(authenticate) -> None:
    from litellm.proxy._types import ProxyException

    with pytest.raises(ProxyException) as wrong:
        authenticated(authenticate, "sk-wrong-0123456789abcdef")
    with pytest.raises(ProxyException) as not_here:
        authenticated(authenticate, KEY_A, "/key/generate")
    assert (wrong.value.type, wrong.value.headers) == ("auth_error", {"WWW-Authenticate": "Bearer"})
    assert (not_here.value.type, not_here.value.headers) == ("auth_error", {})
