"""The console in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
against the app served by uvicorn on a loopback port, with PostgreSQL, moto behind the SigV4
gateway, real tokens and the Arborist stub. axe-core runs inside every main page.

Set ``CONSOLE_SCREENSHOTS=docs/console`` to refresh the screenshots the docs link to.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.conftest import (
    PINNED_KEY_ID,
    PINNED_SECRET,
    STATIC_KEY_ID,
    STATIC_SECRET,
    boto,
    put_static_secret,
)
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer
from tests.support.live import LiveServer
from tests.support.moto import MotoServer
from tests.support.net import BackgroundHTTPServer, JsonHandler
from tests.support.s3_gateway import S3Gateway

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
# Test-only tools live outside the package and out of git (see .gitignore).
AXE_DIR = ROOT / ".test-tools" / "axe-core"
SECRET_REF = "aws-sm://gen3/bucket-registry/console-abc"
PROJECT = "/programs/DEV/projects/ABC"
WIDE, NARROW = (1280, 900), (320, 800)


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's browser build, from the npm registry with npm's own client, cached."""
    script = AXE_DIR / "package" / "axe.min.js"
    if not script.exists():
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(
            ["npm", "pack", "axe-core@4", "--pack-destination", str(AXE_DIR)],
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout.split()[-1]
        with tarfile.open(AXE_DIR / packed) as archive:
            archive.extract("package/axe.min.js", AXE_DIR, filter="data")
            archive.extract("package/LICENSE", AXE_DIR, filter="data")
    return script.read_text()


@pytest.fixture
def keyed_gateway(gateway: S3Gateway) -> S3Gateway:
    gateway.add_key(STATIC_KEY_ID, STATIC_SECRET)
    gateway.add_key(PINNED_KEY_ID, PINNED_SECRET)
    return gateway


@pytest.fixture
def start_live(
    make_settings: Any,
    pg_url: str,
    moto: MotoServer,
    keyed_gateway: S3Gateway,
    arborist: ArboristStub,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., LiveServer]]:
    """Starts the app on a loopback port with the given setting overrides."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", keyed_gateway.url)
    arborist.make_admin("admin")
    started: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        settings = make_settings(
            pg_url, endpoint_allowlist="127.0.0.1", secrets_backend="aws_sm", **overrides
        )
        started.append(LiveServer(settings).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live(start_live: Callable[..., LiveServer]) -> LiveServer:
    return start_live()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def sign_in(browser: webdriver.Chrome, live: LiveServer, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{live.url}/console/static/console.css")  # a page of the origin, no data
    browser.add_cookie({"name": "access_token", "value": token, "path": "/"})


def wait_for_text(browser: webdriver.Chrome, text: str) -> None:
    WebDriverWait(browser, 20).until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), text))


def accessibility_problems(browser: webdriver.Chrome, axe: str) -> list[str]:
    browser.execute_script(axe)
    violations = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations));"
    )
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def check_page(browser: webdriver.Chrome, axe: str, shot: str | None = None) -> None:
    """No serious/critical axe finding, no secret in the HTML, usable at 320 px and wide."""
    html = browser.page_source
    for secret in (SECRET_REF, STATIC_SECRET, PINNED_SECRET):
        assert secret not in html
    assert accessibility_problems(browser, axe) == []
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder and shot:
        browser.save_screenshot(str(ROOT / folder / f"{shot}.png"))
    browser.set_window_size(*NARROW)
    try:
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 0:
            wide = browser.execute_script(
                "const w = document.documentElement.clientWidth; return [...document"
                ".querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w)"
                ".map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' + e.className);"
            )
            raise AssertionError(f"the page scrolls sideways by {overflow}px at 320px: {wide}")
        assert accessibility_problems(browser, axe) == []
    finally:
        browser.set_window_size(*WIDE)


def submit(browser: webdriver.Chrome, button_text: str, *, confirm: bool = False) -> None:
    button = browser.find_element(By.XPATH, f"//button[normalize-space()='{button_text}']")
    button.click()
    if confirm:
        WebDriverWait(browser, 5).until(ec.alert_is_present())
        browser.switch_to.alert.accept()


def test_an_admin_registers_binds_validates_and_suspends_a_bucket(
    browser: webdriver.Chrome,
    live: LiveServer,
    issuer: FenceIssuer,
    moto: MotoServer,
    keyed_gateway: S3Gateway,
    axe_source: str,
) -> None:
    boto(moto, "s3").create_bucket(Bucket="console-abc")
    put_static_secret(moto, "gen3/bucket-registry/console-abc", STATIC_KEY_ID, STATIC_SECRET)

    # Not signed in: off to Fence's login, told to come back here.
    browser.delete_all_cookies()
    browser.get(f"{live.url}/console/health")
    assert browser.current_url.startswith(f"{issuer.user_api}/login?redirect=/console/health")

    sign_in(browser, live, issuer.token("admin"))
    browser.get(f"{live.url}/console/buckets/new")
    check_page(browser, axe_source, "register")
    browser.find_element(By.ID, "name").send_keys("console-abc")
    Select(browser.find_element(By.ID, "provider")).select_by_value("minio")
    browser.find_element(By.ID, "endpoint").send_keys(keyed_gateway.url)
    Select(browser.find_element(By.ID, "auth_mode")).select_by_value("static")
    browser.find_element(By.ID, "secret_ref").send_keys(SECRET_REF)
    browser.find_element(By.ID, "owner_project").send_keys("ABC")
    browser.find_element(By.ID, "labels").send_keys("team:genomics")
    submit(browser, "Register")
    wait_for_text(browser, "Bucket registered")
    assert browser.current_url.startswith(f"{live.url}/console/buckets/console-abc?")

    # Bind from the keyboard alone: type the path, Enter submits the form.
    field = browser.find_element(By.ID, "resource_path")
    field.send_keys(PROJECT)
    browser.find_element(By.ID, "op-write").send_keys(Keys.SPACE)
    field.send_keys(Keys.ENTER)
    wait_for_text(browser, "Binding added")
    bindings = browser.find_element(By.XPATH, "//section[@aria-labelledby='h-bindings']").text
    assert PROJECT in bindings and "read write" in bindings

    submit(browser, "Validate now")
    wait_for_text(browser, "Validation passed")
    checks = browser.find_element(By.XPATH, "//section[@aria-labelledby='h-validation']").text
    assert "presign_test pass" in checks and "bucket_listable pass" in checks
    check_page(browser, axe_source, "bucket")

    submit(browser, "Suspend", confirm=True)
    wait_for_text(browser, "Bucket suspended")
    assert browser.find_element(By.CSS_SELECTOR, "h1 .status").text == "suspended"

    browser.get(f"{live.url}/console/audit?bucket=console-abc")
    actions = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.action")]
    assert actions == ["suspend", "bind", "create"]
    check_page(browser, axe_source, "audit")

    browser.get(f"{live.url}/console/buckets")
    assert "console-abc" in browser.find_element(By.TAG_NAME, "table").text
    check_page(browser, axe_source, "buckets")

    # A bucket whose secret is missing fails its validation; the health page reads it back.
    with admin_api(live, issuer) as api:
        broken = {
            "name": "console-broken",
            "provider": "minio",
            "endpoint": keyed_gateway.url,
            "auth_mode": "static",
            "secret_ref": SECRET_REF + "-missing",
        }
        assert api.post("/admin/buckets", json=broken).status_code == 201
        assert api.post("/admin/buckets/console-broken/validate").json()["ok"] is False
    browser.get(f"{live.url}/console/health")
    failing = browser.find_element(By.XPATH, "//section[@aria-labelledby='h-failing']").text
    assert "console-broken" in failing and "secret_accessible" in failing
    assert "console-abc" in browser.find_element(By.TAG_NAME, "main").text  # suspended
    check_page(browser, axe_source, "health")

    browser.get(f"{live.url}/console/pending")
    check_page(browser, axe_source)

    # A rotation is typed into write-only fields and never shown back.
    put_static_secret(moto, "gen3/bucket-registry/console-pinned", PINNED_KEY_ID, PINNED_SECRET)
    browser.get(f"{live.url}/console/buckets/console-abc")
    browser.find_element(By.ID, "rot-secret_ref").send_keys(
        "aws-sm://gen3/bucket-registry/console-pinned"
    )
    submit(browser, "Rotate")
    wait_for_text(browser, "Credentials rotated")
    assert "console-pinned" not in browser.page_source
    check_page(browser, axe_source)


def test_a_user_without_bucket_admin_is_refused(
    browser: webdriver.Chrome, live: LiveServer, issuer: FenceIssuer, axe_source: str
) -> None:
    sign_in(browser, live, issuer.token("bob"))
    browser.get(f"{live.url}/console/buckets")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert "bucket_admin" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    check_page(browser, axe_source)


class _CrossSite(JsonHandler):
    target = ""

    def do_GET(self) -> None:
        page = (
            "<!doctype html><title>elsewhere</title>"
            f'<form id="f" method="post" action="{self.target}"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


def test_a_form_post_without_the_csrf_header_is_refused(
    browser: webdriver.Chrome, live: LiveServer, issuer: FenceIssuer
) -> None:
    sign_in(browser, live, issuer.token("admin"))
    browser.get(f"{live.url}/console/buckets/new")
    browser.find_element(By.ID, "name").send_keys("csrf-target")
    Select(browser.find_element(By.ID, "auth_mode")).select_by_value("workload_identity")
    submit(browser, "Register")
    wait_for_text(browser, "Bucket registered")

    # The console's own page, but a plain form post (no script, so no header): refused.
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post';"
        "f.action = '/console/buckets/csrf-target/suspend'; document.body.append(f); f.submit();"
    )
    WebDriverWait(browser, 10).until(ec.title_contains("Not allowed"))
    assert "CSRF" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text

    # Another site's page posting a form at the console: refused too.
    _CrossSite.target = f"{live.url}/console/buckets/csrf-target/suspend"
    elsewhere = BackgroundHTTPServer(_CrossSite).start()
    try:
        browser.get(elsewhere.url.replace("127.0.0.1", "localhost"))
        WebDriverWait(browser, 10).until(lambda b: b.current_url != "about:blank")
        WebDriverWait(browser, 10).until(lambda b: "elsewhere" not in b.title)
        try:
            browser.switch_to.alert.dismiss()
        except NoAlertPresentException:
            pass
    finally:
        elsewhere.stop()
    sign_in(browser, live, issuer.token("admin"))
    browser.get(f"{live.url}/console/buckets/csrf-target")
    assert browser.find_element(By.CSS_SELECTOR, "h1 .status").text == "active"


# ----- project registrants and the admin's approval -----------------------------------------

OTHER_PROJECT = "/programs/DEV/projects/XYZ"


def admin_api(live: LiveServer, issuer: FenceIssuer, user: str = "admin") -> httpx.Client:
    """The JSON API as a bearer-token client (the console's cookie is not accepted there)."""
    headers = {"Authorization": f"Bearer {issuer.token(user)}"}
    return httpx.Client(base_url=live.url, headers=headers, timeout=30)


def status_of(live: LiveServer, issuer: FenceIssuer, name: str) -> str:
    with admin_api(live, issuer) as api:
        return str(api.get(f"/admin/buckets/{name}").json()["status"])


def register_static(
    browser: webdriver.Chrome, live: LiveServer, gateway: S3Gateway, name: str
) -> None:
    """A registrant's registration of a MinIO bucket of their project, through the form."""
    browser.get(f"{live.url}/console/buckets/new")
    browser.find_element(By.ID, "name").send_keys(name)
    Select(browser.find_element(By.ID, "provider")).select_by_value("minio")
    browser.find_element(By.ID, "endpoint").send_keys(gateway.url)
    Select(browser.find_element(By.ID, "auth_mode")).select_by_value("static")
    Select(browser.find_element(By.ID, "project_resource")).select_by_value(PROJECT)
    submit(browser, "Register")
    wait_for_text(browser, "Bucket registered")


def put_keys(browser: webdriver.Chrome) -> None:
    browser.find_element(By.ID, "access_key_id").send_keys(STATIC_KEY_ID)
    browser.find_element(By.ID, "secret_access_key").send_keys(STATIC_SECRET)
    submit(browser, "Rotate")
    wait_for_text(browser, "Credentials rotated")


def post_from_the_console(browser: webdriver.Chrome, action: str) -> None:
    """A form post through the console's own script (so with the CSRF header)."""
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post';"
        "f.setAttribute('data-console', ''); f.action = arguments[0];"
        "document.body.append(f); f.requestSubmit();",
        action,
    )


def test_a_registrant_sees_only_their_project_and_manages_their_own_bucket(
    browser: webdriver.Chrome,
    live: LiveServer,
    issuer: FenceIssuer,
    arborist: ArboristStub,
    moto: MotoServer,
    keyed_gateway: S3Gateway,
    axe_source: str,
) -> None:
    arborist.grant("carol", "bucket_register", PROJECT)
    boto(moto, "s3").create_bucket(Bucket="carol-static")
    with admin_api(live, issuer) as api:
        theirs = {
            "name": "xyz-data",
            "provider": "aws",
            "auth_mode": "workload_identity",
            "project_resource": OTHER_PROJECT,
        }
        assert api.post("/admin/buckets", json=theirs).status_code == 201

    sign_in(browser, live, issuer.token("carol"))
    browser.get(f"{live.url}/console/buckets/new")
    options = Select(browser.find_element(By.ID, "project_resource")).options
    assert [option.get_attribute("value") for option in options] == [PROJECT]
    auth_modes = Select(browser.find_element(By.ID, "auth_mode")).options
    assert "workload_identity" not in [option.get_attribute("value") for option in auth_modes]
    assert not browser.find_elements(By.ID, "secret_ref")
    check_page(browser, axe_source)

    register_static(browser, live, keyed_gateway, "carol-static")
    assert browser.find_element(By.CSS_SELECTOR, "h1 .status").text == "pending"
    put_keys(browser)  # staged, validated against the store, then made current
    assert browser.find_element(By.CSS_SELECTOR, "h1 .status").text == "active"
    field = browser.find_element(By.ID, "resource_path")
    field.send_keys(PROJECT)
    field.send_keys(Keys.ENTER)
    wait_for_text(browser, "Binding added")
    check_page(browser, axe_source, "registrant-bucket")

    browser.get(f"{live.url}/console/buckets")
    listed = browser.find_element(By.TAG_NAME, "table").text
    assert "carol-static" in listed and "xyz-data" not in listed
    check_page(browser, axe_source)
    browser.get(f"{live.url}/console/audit")
    assert "xyz-data" not in browser.find_element(By.TAG_NAME, "main").text

    # Another project's bucket: not shown, and a form post for it is refused.
    browser.get(f"{live.url}/console/buckets/carol-static")
    post_from_the_console(browser, "/console/buckets/xyz-data/suspend")
    WebDriverWait(browser, 10).until(ec.title_contains("Not allowed"))
    assert "xyz-data" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    browser.get(f"{live.url}/console/buckets/xyz-data")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert status_of(live, issuer, "xyz-data") == "active"


def test_an_admin_approves_and_rejects_pending_registrations(
    browser: webdriver.Chrome,
    start_live: Callable[..., LiveServer],
    issuer: FenceIssuer,
    arborist: ArboristStub,
    moto: MotoServer,
    keyed_gateway: S3Gateway,
    axe_source: str,
) -> None:
    live = start_live(self_service_approval="admin")
    arborist.grant("carol", "bucket_register", PROJECT)
    s3 = boto(moto, "s3")
    for name in ("carol-approve", "carol-reject"):
        s3.create_bucket(Bucket=name)

    # One registration through the console, one through the API.
    sign_in(browser, live, issuer.token("carol"))
    register_static(browser, live, keyed_gateway, "carol-approve")
    put_keys(browser)
    assert browser.find_element(By.CSS_SELECTOR, "h1 .status").text == "pending"
    with admin_api(live, issuer, "carol") as api:
        body = {
            "name": "carol-reject",
            "provider": "minio",
            "endpoint": keyed_gateway.url,
            "auth_mode": "static",
            "project_resource": PROJECT,
        }
        assert api.post("/admin/buckets", json=body).status_code == 201
    browser.get(f"{live.url}/console/pending")
    assert not browser.find_elements(By.XPATH, "//button[normalize-space()='Approve']")

    sign_in(browser, live, issuer.token("admin"))
    browser.get(f"{live.url}/console/pending")
    waiting = browser.find_element(By.TAG_NAME, "table").text
    assert "carol-approve" in waiting and "carol-reject" in waiting
    check_page(browser, axe_source, "pending")
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Approve carol-approve']").click()
    wait_for_text(browser, "carol-approve approved")
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Reject carol-reject']").click()
    WebDriverWait(browser, 5).until(ec.alert_is_present())
    browser.switch_to.alert.accept()
    wait_for_text(browser, "carol-reject rejected")
    assert "Nothing is waiting." in browser.find_element(By.TAG_NAME, "main").text
    assert status_of(live, issuer, "carol-approve") == "active"
    assert status_of(live, issuer, "carol-reject") == "rejected"

    for name, action in (("carol-approve", "approve"), ("carol-reject", "reject")):
        browser.get(f"{live.url}/console/audit?bucket={name}")
        actions = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.action")]
        assert actions[0] == action and actions[-1] == "register", actions
        actors = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert "admin" in actors[0]
    browser.get(f"{live.url}/console/audit")
    assert {"approve", "reject"} <= {
        cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.action")
    }
    check_page(browser, axe_source)
