"""The page at / in a real browser: Debian's chromium, headless, driven by
selenium through Debian's chromedriver, against the real llm-entry (real
supervisord and LiteLLM) and the engine double.

Screenshots of the page at a desktop and at a phone's width are kept as test
artefacts in ARTEFACTS (test-artefacts/browser/ at the top of the repository
unless LLM_ENTRY_TEST_ARTEFACTS names another folder), outside pytest's
temporary folders, so that a CI run leaves them behind."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from bench.procs import wait_for

from harness import WRONG_KEY, Entry, running
from repo_paths import REPO

ARTEFACTS = Path(os.environ.get("LLM_ENTRY_TEST_ARTEFACTS") or REPO / "test-artefacts") / "browser"
TEAM_KEY = "sk-team-" + secrets.token_hex(16)
LIMITED_KEY = "sk-limited-" + secrets.token_hex(16)
TOKENS = 30              # the engine double's answer: its words, then " tok" up to 30 tokens
TOKEN_INTERVAL = 0.06    # seconds before each streamed token: a stream of about 2 s
DESKTOP = (1280, 800)
PHONE = (390, 844)       # an iPhone 12-15's CSS pixels


def browser_programs() -> tuple[str, str]:
    """Debian's chromium and chromedriver: scripts/test.sh installs both; a run without them fails."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise AssertionError("chromium and chromedriver are not installed: scripts/test.sh installs them "
                             "(apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def entry(tmp_path_factory) -> Iterator[Entry]:
    tmp = tmp_path_factory.mktemp("page")
    keys = tmp / "keys"
    keys.write_text(f"{TEAM_KEY} name=team rpm=100 tpm=200000 max_parallel=4\n{LIMITED_KEY} name=limited rpm=1\n")
    hold = tmp / "hold"
    with running(tmp, args=["--api-keys-file", str(keys)], env={
            "ENGINE_DOUBLE_TOKENS": str(TOKENS), "ENGINE_DOUBLE_TOKEN_INTERVAL": str(TOKEN_INTERVAL),
            "ENGINE_DOUBLE_HOLD_FILE": str(hold)}) as entry:
        entry.hold = hold
        yield entry


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, chromedriver = browser_programs()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(entry, browser) -> WebDriver:
    """The page, freshly loaded at desktop size."""
    set_viewport(browser, *DESKTOP)
    browser.get(entry.url("/"))
    browser.execute_script("sessionStorage.clear()")
    wait_for(lambda: hook(browser, "key").is_displayed(), 10, "the page to show its key field")
    return browser


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def hook(driver: WebDriver, name: str):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def error_text(driver: WebDriver) -> str:
    box = hook(driver, "error")
    return box.text if box.is_displayed() else ""


def last_answer(driver: WebDriver) -> str:
    try:
        answers = hook(driver, "output").find_elements(By.CSS_SELECTOR, ".msg.assistant .text")
        return answers[-1].text if answers else ""
    except StaleElementReferenceException:
        return ""


def use_key(driver: WebDriver, entry: Entry, key: str) -> None:
    hook(driver, "key").send_keys(key)
    # Read in one script: the page replaces the options while they load.
    listed = "return Array.from(document.getElementById('model').options, option => option.text)"
    wait_for(lambda: driver.execute_script(listed) == [entry.served_model_name], 30,
             "the page to list the served model from /v1/models")


def ask(driver: WebDriver, text: str) -> None:
    hook(driver, "prompt").send_keys(text)
    hook(driver, "send").click()


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    assert driver.save_screenshot(str(path)), f"chromium made no screenshot {path}"
    return path


def test_a_wrong_key_shows_that_the_key_was_not_accepted(page, entry) -> None:
    hook(page, "key").send_keys(WRONG_KEY)
    ask(page, "hello")
    wait_for(lambda: "not accepted" in error_text(page), 30, "the page to say the key is wrong")
    assert hook(page, "prompt").get_attribute("value") == "hello"     # kept for another try
    assert WRONG_KEY not in page.current_url


def test_the_right_key_streams_the_answer_in_and_says_how_fast(page, entry) -> None:
    use_key(page, entry, TEAM_KEY)
    wait_for(lambda: "team" in hook(page, "key-info").text, 30, "the key's name from /llm-entry/key")
    ask(page, "Say something about the sea")
    seen: list[str] = []

    def finished() -> bool:
        seen.append(last_answer(page))
        return not hook(page, "stop").is_enabled() and bool(seen[-1])
    wait_for(finished, 60, "the streamed answer to end")
    answer = last_answer(page)
    assert answer.startswith("double says: Say something about the sea")
    assert answer.count(" tok") == TOKENS - len("double says: Say something about the sea".split())
    assert any(0 < len(text) < len(answer) for text in seen), "no partial answer was ever shown"
    stats = page.find_element(By.CSS_SELECTOR, '.msg.assistant [data-testid="stats"]').text
    assert re.fullmatch(rf"first token \d+ ms · {TOKENS} tokens · [\d.]+ tokens/s", stats), stats
    assert error_text(page) == ""
    assert page.execute_script("return window.localStorage.length") == 0
    assert TEAM_KEY not in page.current_url
    assert screenshot(page, "page-desktop.png").stat().st_size > 0
    set_viewport(page, *PHONE)
    assert page.execute_script("return document.documentElement.scrollWidth") <= PHONE[0], \
        "the page is wider than a phone's screen"
    assert screenshot(page, "page-phone.png").stat().st_size > 0


def test_stop_mid_stream_makes_the_engine_see_the_client_go(page, entry) -> None:
    use_key(page, entry, TEAM_KEY)
    entry.hold.touch()
    try:
        aborted = entry.output().count("engine-double: aborted")
        ask(page, "hold this answer")
        wait_for(lambda: last_answer(page).startswith("double"), 30, "the first token on the page")
        assert hook(page, "stop").is_enabled()
        hook(page, "stop").click()
        wait_for(lambda: entry.output().count("engine-double: aborted") > aborted, 15,
                 "the engine to see its client go while the hold file still exists")
        assert entry.hold.exists()
        stats = page.find_element(By.CSS_SELECTOR, '.msg.assistant [data-testid="stats"]').text
        assert stats.endswith("stopped")
        assert hook(page, "send").is_enabled() and error_text(page) == ""
    finally:
        entry.hold.unlink(missing_ok=True)


def test_a_limited_keys_429_says_when_to_try_again(page, entry) -> None:
    use_key(page, entry, LIMITED_KEY)
    ask(page, "first")
    wait_for(lambda: not hook(page, "stop").is_enabled() and last_answer(page), 60, "the first answer")
    ask(page, "second")
    wait_for(lambda: "limits" in error_text(page), 30, "the page to show the 429")
    wait_seconds = int(re.search(r"Try again in (\d+) s", error_text(page))[1])
    assert 1 <= wait_seconds <= 60
    wait_for(lambda: "0 / 1 left" in hook(page, "key-info").text, 15, "the key's limits to show none left")
