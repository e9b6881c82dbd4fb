"""The console in a real browser: Playwright driving the machine's Debian Chromium against a
real uvicorn server on a free loopback port, over a copy of the seeded SQLite database.

Screenshots of the overview and of an order page are written to ``artifacts/console/``.
Without ``/usr/bin/chromium`` (or ``$ORDERWATCH_TEST_CHROMIUM``) these tests skip
(``apt-get install chromium``), except under ``CI=true``, where they fail: CI must run them
(``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from consoletools import NAMES, PHONE, TOKENS, Seeded, load

from orderwatch.api import create_app
from orderwatch.api.server import ApiServer, bind
from orderwatch.service import Service

CHROMIUM = Path(os.environ.get("ORDERWATCH_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{CHROMIUM} is missing under CI=true: .ci/run installs it as root "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    pytest.skip(
        f"browser tests need Chromium at {CHROMIUM}: run `apt-get install -y chromium`",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api")


class LiveServer:
    """The API app (console included) under uvicorn, in a thread with its own loop."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.server: ApiServer | None = None
        self.url = ""
        self.thread = threading.Thread(target=self._run, name="console-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test by start()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        service = await Service.open(load(self.db, "http://127.0.0.1:9"))
        try:
            app = create_app(service)
            config = uvicorn.Config(
                app, log_config=None, access_log=False, lifespan="off", server_header=False
            )
            server = ApiServer(config)
            server.sockets = [bind("127.0.0.1", 0)]
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self.server = server
            self.ready.set()
            await server.run_bound()
        finally:
            await service.close()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(30), "the console server did not start"
        if self.error:
            raise self.error

    def stop(self) -> None:
        if self.server:
            self.server.stop()
        self.thread.join(15)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, seeded_db: tuple[Path, Seeded]
) -> Iterator[tuple[str, Seeded]]:
    template, seeded = seeded_db
    db = tmp_path_factory.mktemp("console-live") / "live.db"
    shutil.copyfile(template, db)
    server = LiveServer(db)
    server.start()
    try:
        yield server.url, seeded
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    context.set_default_timeout(15_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def log_in(page: Any, url: str, role: str) -> None:
    page.goto(f"{url}/console")
    assert "/console/login" in page.url  # not logged in: sent to the form
    page.fill("input[name=token]", TOKENS[role])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/console")
    assert page.text_content("[data-testid=user]") == NAMES[role]


def test_operator_finds_an_order_and_resolves_it(page: Any, live: tuple[str, Seeded]) -> None:
    url, seeded = live
    log_in(page, url, "operator")
    cookie = next(c for c in page.context.cookies() if c["name"] == "orderwatch_console")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert TOKENS["operator"] not in cookie["value"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert page.text_content("[data-testid=count-FAILED]")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # find the order by its customer id, open it from the list
    page.click("text=订单 Orders")
    page.wait_for_selector("[data-testid=orders]")
    page.screenshot(path=str(ARTIFACTS / "orders.png"), full_page=True)
    page.fill("input[name=q]", "C-PEND")
    page.select_option("select[name=field]", "customer_id")
    page.click("button:has-text('查询 Search')")
    assert page.text_content("[data-testid=total]").startswith("1 ")
    page.click(f"a:has-text('{seeded.pending}')")
    page.wait_for_url(f"**/console/orders/{seeded.pending}")
    assert "PENDING" in page.text_content("[data-testid=status]")

    # resolve with a note: the browser asks first; dismissing changes nothing
    form = page.locator("form[action$='/resolve']")
    form.locator("input[name=note]").fill("客户来电确认 customer confirmed by phone")
    page.once("dialog", lambda d: d.dismiss())
    form.locator("button").click()
    page.wait_for_timeout(300)
    assert "PENDING" in page.text_content("[data-testid=status]")
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    form.locator("button").click()
    page.wait_for_selector("[data-testid=done]")
    assert messages
    assert "Resolve" in messages[0]
    assert "FAILED" in page.text_content("[data-testid=status]")
    assert page.text_content("[data-testid=reason]") == "RESOLVED_BY_OPERATOR"
    first = page.locator("[data-testid=timeline] tbody tr").first
    assert "resolved" in first.text_content()
    assert "customer confirmed by phone" in first.text_content()
    assert NAMES["operator"] in first.text_content()

    # an order page with logistics, events and a notification, for the artifact
    page.goto(f"{url}/console/orders?q={seeded.ordered}")
    page.click(f"a:has-text('{seeded.ordered}')")
    page.wait_for_selector("[data-testid=trail]")
    assert page.locator("[data-testid=notifications] button").count() == 1  # redeliver
    page.screenshot(path=str(ARTIFACTS / "order.png"), full_page=True)


def test_viewer_sees_no_actions_and_a_forged_post_is_refused(
    page: Any, live: tuple[str, Seeded]
) -> None:
    url, seeded = live
    log_in(page, url, "viewer")
    page.goto(f"{url}/console/orders/{seeded.ordered}")
    assert page.locator("[data-testid=actions]").count() == 0
    assert page.locator("form[action*='/redeliver']").count() == 0
    assert page.locator("form[action$='/bulk']").count() == 0
    assert page.text_content("[data-testid=phone]") == "139****5678"
    assert PHONE not in page.content()
    page.screenshot(path=str(ARTIFACTS / "order-viewer.png"), full_page=True)

    # the viewer's own valid CSRF token (from the logout form), but the wrong role
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(
        f"{url}/console/orders/{seeded.ordered}/resolve",
        form={"csrf": csrf, "confirmed": "yes", "status": "FAILED", "note": "forged"},
    )
    assert r.status == 403
    assert "viewer" in r.text()
    page.reload()
    assert "ORDERED" in page.text_content("[data-testid=status]")


def test_a_post_without_csrf_is_refused(page: Any, live: tuple[str, Seeded]) -> None:
    url, seeded = live
    log_in(page, url, "operator")
    target = f"{url}/console/orders/{seeded.unreachable[2]}/retry"
    r = page.request.post(target, form={"confirmed": "yes"})
    assert r.status == 403
    assert "CSRF" in r.text()
    r = page.request.post(target, form={"confirmed": "yes", "csrf": "not-the-token"})
    assert r.status == 403
    page.goto(f"{url}/console/orders/{seeded.unreachable[2]}")
    assert "PLACE_UNREACHABLE" in page.text_content("[data-testid=reason]")
