"""The page at / as shipped: its files are small, hold no inline script or
style (the Content-Security-Policy would block them), keep the key out of
localStorage and the URL, carry the hooks the browser tests use, and are
answered with an ETag, 304 and the security headers."""

from __future__ import annotations

import re

import pytest

from entrypoint.inside.ui_page import (
    CONTENT_SECURITY_POLICY,
    FILES,
    PAGE_ROUTES,
    UI_FOLDER,
    Page,
    etag_matches,
    ui_enabled,
)

MAX_PAGE_BYTES = 100 * 1024
TEST_HOOKS = ("key", "prompt", "send", "stop", "output", "error")


def text(name: str) -> str:
    return (UI_FOLDER / name).read_text()


def test_every_file_of_the_page_together_is_under_100_kb() -> None:
    assert sum((UI_FOLDER / name).stat().st_size for name, _ in FILES.values()) < MAX_PAGE_BYTES
    assert sorted(path.name for path in UI_FOLDER.iterdir()) == sorted(name for name, _ in FILES.values())


def test_the_page_has_no_inline_script_style_or_handler_and_loads_nothing_from_elsewhere() -> None:
    page = text("index.html")
    assert not re.search(r"<script>|<style|\sstyle=|\son[a-z]+=|javascript:", page)
    assert not re.search(r"https?://", page + text("app.js") + text("style.css"))
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY


def test_every_script_tag_has_a_source_and_no_body() -> None:
    for tag, body in re.findall(r"(<script[^>]*>)(.*?)</script>", text("index.html"), re.S):
        assert 'src="/llm-entry/ui/app.js"' in tag and not body.strip()


def test_the_key_never_goes_to_local_storage_or_the_url() -> None:
    script = text("app.js")
    assert not re.search(r"localStorage\s*[.\[]", script)
    assert not re.search(r"location|history\.|[?&]key=", script)
    assert "sessionStorage.setItem" in script


@pytest.mark.parametrize("hook", TEST_HOOKS)
def test_the_page_carries_each_test_hook_once(hook: str) -> None:
    assert text("index.html").count(f'data-testid="{hook}"') == 1


def test_every_control_has_a_label() -> None:
    page = text("index.html")
    controls = re.findall(r'<(?:input|textarea|select)[^>]*\bid="([^"]+)"', page)
    assert controls and all(f'for="{control}"' in page or f'<label class="check"><input id="{control}"' in page
                            for control in controls)


def test_a_file_is_answered_with_its_etag_and_the_security_headers() -> None:
    status, headers, body = Page().answer("GET", "/", [])
    found = dict(headers)
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert found[b"content-type"] == b"text/html; charset=utf-8"
    assert found[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()
    assert found[b"x-content-type-options"] == b"nosniff"
    assert found[b"cache-control"] == b"no-cache"
    assert re.fullmatch(rb'"[0-9a-f]{32}"', found[b"etag"])
    assert int(found[b"content-length"]) == len(body)


def test_a_known_etag_gets_304_without_a_body_and_a_head_gets_no_body() -> None:
    page = Page()
    etag = dict(page.answer("GET", "/llm-entry/ui/app.js", [])[1])[b"etag"]
    for asked in (etag, b"W/" + etag, b'"other", ' + etag, b"*"):
        status, headers, body = page.answer("GET", "/llm-entry/ui/app.js", [(b"if-none-match", asked)])
        assert (status, body) == (304, b"") and dict(headers)[b"etag"] == etag
    assert page.answer("GET", "/llm-entry/ui/app.js", [(b"if-none-match", b'"other"')])[0] == 200
    status, headers, body = page.answer("HEAD", "/", [])
    assert status == 200 and body == b"" and int(dict(headers)[b"content-length"]) > 0


def test_each_file_has_its_own_etag() -> None:
    page = Page()
    assert len({dict(page.answer("GET", path, [])[1])[b"etag"] for path in PAGE_ROUTES}) == len(PAGE_ROUTES)


def test_turned_off_every_path_of_the_page_answers_404() -> None:
    for path in PAGE_ROUTES:
        assert Page(enabled=False).answer("GET", path, [])[0] == 404


def test_the_page_is_on_unless_llm_entry_says_0() -> None:
    assert ui_enabled({}) and ui_enabled({"LLM_ENTRY_UI": "1"}) and not ui_enabled({"LLM_ENTRY_UI": "0"})


def test_an_if_none_match_list_is_read_tag_by_tag() -> None:
    assert etag_matches(b'"a", W/"b"', b'"b"') and not etag_matches(b'"ab"', b'"a"')
