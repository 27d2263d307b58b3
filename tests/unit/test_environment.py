"""Loopback traffic never goes through a proxy the container's environment
names: llm-entry adds loopback to NO_PROXY once, keeping what was there."""

from entrypoint.environment import loopback_exempt


def test_loopback_is_added_to_the_no_proxy_list_once():
    assert loopback_exempt(None, None) == "127.0.0.1,localhost,::1"
    assert loopback_exempt("corp.example, localhost", "10.0.0.0/8") == \
        "corp.example,localhost,10.0.0.0/8,127.0.0.1,::1"

