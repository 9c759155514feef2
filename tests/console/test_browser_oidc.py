"""Signing in to the console with an OIDC issuer, in a real browser: the login page offers the
issuer, the issuer (a real one on loopback, approving at once) sends the browser back, and the
console shows what RBAC lets that user see; refusals come back to the login page."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Kubectl, Server, make_kubectl, start_server
from tests.console.browser import WAIT, chromium, new_page, shoot
from tests.e2e.oidc_issuer import CLIENT_ID, Issuer, running_issuer

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
GRANTS = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: project-lister}
rules: [{apiGroups: [""], resources: [namespaces], verbs: [list, get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-lists-projects}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: project-lister}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "oidc:alice"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-edits, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "oidc:alice"}]
"""


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    with running_issuer(tmp_path_factory.mktemp("issuer")) as found:
        yield found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Server]:
    """A public client (no secret: PKCE only)."""
    srv = start_server(tmp_path_factory.mktemp("console-oidc") / "data", "--oidc-issuer-url",
                       issuer.url, "--oidc-client-id", CLIENT_ID, "--oidc-groups-claim",
                       "groups", "--oidc-ca-file", str(issuer.ca), "--oidc-username-prefix",
                       "oidc:")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def kubectl(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    kubectl = make_kubectl(server, tmp_path_factory.mktemp("kubectl"))
    kubectl("create", "namespace", "team-a")
    kubectl("apply", "-f", "-", input=GRANTS)
    return kubectl


def sign_in(browser: Any, server: Server, issuer: Issuer, user: str) -> Any:
    """A fresh browser at the login page, after clicking "Sign in with" the issuer as `user`."""
    issuer.user = user
    page = new_page(browser)
    page.goto(f"{server.url}/console/")
    page.wait_for_url(re.compile(r"/console/login$"))
    button = page.locator("#oidc-login")
    expect(button).to_have_text(f"Sign in with {issuer.url.removeprefix('https://')}")
    return page


def test_signing_in_with_the_issuer_shows_the_users_projects(
        browser: Any, server: Server, issuer: Issuer, kubectl: Kubectl) -> None:
    page = sign_in(browser, server, issuer, "alice")
    shoot(page, "login-oidc")
    page.click("#oidc-login")
    page.wait_for_url(re.compile(r"/console/#/"), timeout=WAIT)
    expect(page.locator("#user")).to_have_text("oidc:alice")
    expect(page.locator("#project option[value=team-a]")).to_have_count(1)
    page.select_option("#project", "team-a")
    expect(page.locator("text=No virtual machines in project \"team-a\".")).to_be_visible(
        timeout=WAIT)
    expect(page.locator("a:has-text('Create virtual machine')")).to_be_visible()  # edit role
    assert issuer.authorize_requests[-1]["code_challenge_method"] == "S256"
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["evroc-session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert session["value"].count(".") == 2 and "evroc-oidc-login" not in cookies


def test_a_user_rbac_does_not_allow_sees_the_refusal(browser: Any, server: Server,
                                                     issuer: Issuer, kubectl: Kubectl) -> None:
    page = sign_in(browser, server, issuer, "mallory")
    page.click("#oidc-login")
    page.wait_for_url(re.compile(r"/console/#/"), timeout=WAIT)
    expect(page.locator("#user")).to_have_text("oidc:mallory")
    expect(page.locator("#project-typed")).to_be_visible()  # may not list projects
    expect(page.locator(".view .error")).to_contain_text(
        'Forbidden: virtualmachines.compute.evroclabs.net is forbidden: User "oidc:mallory" '
        'cannot list resource "virtualmachines"', timeout=WAIT)
    expect(page.locator("a:has-text('Create virtual machine')")).to_have_count(0)


def test_the_issuers_refusal_is_shown_on_the_login_page(browser: Any, server: Server,
                                                        issuer: Issuer) -> None:
    page = sign_in(browser, server, issuer, "alice")
    issuer.deny = ("access_denied", "The user cancelled the sign-in")
    try:
        page.click("#oidc-login")
        page.wait_for_url(re.compile(r"/console/login\?error="), timeout=WAIT)
    finally:
        issuer.deny = None
    expect(page.locator("#login-error")).to_have_text(
        f"Sign-in refused. Unauthorized: the issuer {issuer.url} refused the sign-in: "
        "access_denied: The user cancelled the sign-in")
    expect(page.locator("#oidc-login")).to_be_visible()  # and may try again


def test_a_tampered_state_is_refused(browser: Any, server: Server, issuer: Issuer) -> None:
    page = sign_in(browser, server, issuer, "alice")

    def tamper(route: Any) -> None:
        """The start of the sign-in as the server answers it, but the issuer's way back (asked
        here: Playwright sees no request of a redirect chain but the first) with another
        state."""
        started = route.fetch(max_redirects=0)
        back = httpx.get(started.headers["location"],
                         verify=ssl.create_default_context(cafile=str(issuer.ca)))
        route.fulfill(status=303, headers={
            "location": back.headers["location"].replace("state=", "state=tampered"),
            "set-cookie": started.headers["set-cookie"]})

    page.route(re.compile(r"/console/oidc/login$"), tamper)
    page.click("#oidc-login")
    page.wait_for_url(re.compile(r"/console/login\?error="), timeout=WAIT)
    expect(page.locator("#login-error")).to_contain_text(
        "Forbidden: the callback's state is not the one of the sign-in this browser started")
    assert "evroc-session" not in {c["name"] for c in page.context.cookies()}


def test_the_session_ends_with_the_id_token(browser: Any, server: Server, issuer: Issuer,
                                            tmp_path: Path) -> None:
    """An expired ID token is refused as kubectl's would be: the console goes to the login."""
    page = new_page(browser)
    expired = issuer.token(sub="alice", lifetime=-5)
    host = server.url.removeprefix("https://").split(":")[0]
    page.context.add_cookies([{"name": "evroc-session", "value": expired, "domain": host,
                               "path": "/", "secure": True, "httpOnly": True,
                               "sameSite": "Strict"}])
    page.goto(f"{server.url}/console/")
    page.wait_for_url(re.compile(r"/console/login$"), timeout=WAIT)
