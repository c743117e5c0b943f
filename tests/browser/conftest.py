"""Browser tests: Playwright for Python driving Debian's chromium against a real ``roost serve``.

* ``browser`` (one per module): headless chromium from ``shutil.which("chromium")`` (never a
  Playwright download). Without chromium or Playwright the tests skip, except with ``CI=true``:
  then they fail (``.ci/run`` installs chromium with apt-get).
* ``roost_server`` (one per module): a ``roost serve`` subprocess on a temp SQLite database with
  console tokens (``OPERATE_TOKEN``, ``READ_TOKEN``) and the service token; ``.url``.
* ``page``: a fresh context and page per test (1280x800, reduced motion).
* ``sign_in(page, server, role="operate")``: signs in as a person would (label, typing, button).
* ``shot(page, name)``: a full-page screenshot ``<test>-<name>.png`` in the run's screenshot folder,
  ``$ROOST_SCREENSHOTS`` or a temp folder (named by tests/conftest.py); the run prints where.
* ``axe(page)``: axe-core (bundled by ``axe-playwright-python``) on the page; fails on any
  serious or critical violation, listing them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import CI
from tests.support.server import ServerProcess

OPERATE_TOKEN = "browser-operate-token-for-roost-tests-0001"
READ_TOKEN = "browser-read-token-for-roost-tests-000000001"
CONSOLE_TOKENS = f"ops:operate:{OPERATE_TOKEN},viewer:read:{READ_TOKEN}"
TOKENS = {"operate": OPERATE_TOKEN, "read": READ_TOKEN}
SERIOUS = ("serious", "critical")

def screenshot_dir() -> Path:
    """``$ROOST_SCREENSHOTS`` (tests/conftest.py names a temp folder when it is unset), made on first use."""
    folder = Path(os.environ.get("ROOST_SCREENSHOTS", "").strip() or tempfile.mkdtemp(prefix="roost-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no browser: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium through Playwright, shared by the module's tests."""
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    # roost imports trio_asyncio, which makes asyncio's new loops its own: give Playwright's sync API a
    # plain asyncio policy for this thread while it runs (restored after the module).
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            try:
                yield browser
            finally:
                browser.close()
    finally:
        asyncio.set_event_loop_policy(None)


@pytest.fixture(scope="module")
def roost_server(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``roost serve`` on a copy of the migrated SQLite template, console on."""
    workdir = tmp_path_factory.mktemp("browser-roost")
    db = workdir / "roost.db"
    shutil.copyfile(sqlite_template, db)
    server = ServerProcess.start(f"sqlite:///{db}", workdir, env={
        "ROOST_CONSOLE_TOKENS": CONSOLE_TOKENS, "ROOST_HEARTBEAT_S": "1", "ROOST_SESSION_DIR": str(workdir / "s")})
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, reduced_motion="reduce")
    context.set_default_timeout(5000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def wait_js(page: Any, expression: str, arg: Any = None, *, timeout: float = 10_000) -> None:
    """Wait until ``expression`` (JS, a function of ``arg`` or an expression) is truthy in ``page``.

    Instead of Playwright's ``wait_for_function``: that one polls inside the page by evaluating a
    string, which the console's Content-Security-Policy (``script-src 'self'``, no ``unsafe-eval``)
    refuses, so it failed whenever the first check was not already true. ``page.evaluate`` goes
    through the DevTools protocol, which the policy does not govern; the pages keep theirs.
    """
    give_up = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > give_up:
            raise AssertionError(f"not true within {timeout / 1000:g} s: {expression} (arg {arg!r})")
        page.wait_for_timeout(50)


def sign_in(page: Any, server: ServerProcess, role: str = "operate", *, path: str = "/console") -> None:
    """Open ``path``, get sent to the sign-in page, type the token, press the button, land on ``path``."""
    page.goto(server.url + path)
    assert "/console/login" in page.url
    page.get_by_label("Console token").fill(TOKENS[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(server.url + path) + r"/?(\?.*)?$"))


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``shot(page, name)``: save a full-page screenshot of ``page`` for a reviewer; returns its path."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(page: Any, name: str) -> Path:
        path = screenshot_dir() / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def axe() -> Callable[[Any], list[dict[str, Any]]]:
    """``axe(page)``: run axe-core on the page; fails on serious or critical violations, returns the rest."""
    from axe_playwright_python.sync_playwright import Axe

    checker = Axe()

    def check(page: Any) -> list[dict[str, Any]]:
        violations = checker.run(page).response["violations"]
        bad = [v for v in violations if v.get("impact") in SERIOUS]
        assert not bad, "accessibility violations on " + page.url + ":\n" + "\n".join(
            f"- {v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['html'][:200]})"
            for v in bad)
        return violations

    return check
