"""The console's session over HTTP: who may do what with the cookie, and what needs CSRF."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from tests.api.client import GROUP, Http
from tests.conftest import Server, start_server
from tests.console.conftest import issue_token

VMS = f"{GROUP}/namespaces/default/virtualmachines"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("console") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return issue_token(server, "console-admin", "system:masters")


def browser(server: Server) -> Http:
    """Requests with no credential of their own (no client certificate, no token), as a
    browser page makes them."""
    return Http(server, tls=ssl.create_default_context(cafile=str(server.ca)))


def cookies_of(set_cookie: list[str]) -> dict[str, str]:
    return dict(header.split(";")[0].split("=", 1) for header in set_cookie)


def login(server: Server, token: str) -> tuple[dict[str, str], str]:
    """Sign in; the cookie header a browser would send next, and the CSRF token."""
    reply = browser(server).request("POST", "/console/session", {"token": token})
    assert reply.status == 200, reply.raw
    jar = cookies_of(reply.set_cookies)
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}, reply.body["csrfToken"]


def test_login_sets_a_secure_http_only_strict_session_cookie(server: Server, token: str) -> None:
    reply = browser(server).request("POST", "/console/session", {"token": token})
    assert reply.status == 200
    assert reply.body["user"]["username"] == "console-admin"
    session, csrf = reply.set_cookies
    assert session.startswith("evroc-session=")
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/"} <= set(session.split("; "))
    assert csrf.startswith("evroc-csrf=") and "HttpOnly" not in csrf  # the page reads it
    assert csrf.split(";")[0].split("=", 1)[1] == reply.body["csrfToken"]


def test_a_bad_token_is_refused_with_a_status(server: Server) -> None:
    reply = browser(server).request("POST", "/console/session", {"token": "nobody.secret"})
    assert reply.status == 401 and reply.body["reason"] == "Unauthorized"
    assert not reply.set_cookies
    reply = browser(server).request("POST", "/console/session", {"token": "a b"})
    assert reply.status == 400 and reply.body["details"]["causes"][0]["field"] == "token"


def test_without_a_session_the_api_and_the_console_answer_401(server: Server) -> None:
    assert browser(server).request("GET", VMS).status == 401
    assert browser(server).request("GET", "/console/js/app.js").status == 401
    page = browser(server).request("GET", "/console/", accept="text/html")
    assert page.status == 303 and page.headers["location"] == "/console/login"
    login_page = browser(server).request("GET", "/console/login", accept="text/html")
    assert login_page.status == 200 and b"<form" in login_page.raw


def test_the_session_reads_without_csrf_and_writes_only_with_it(server: Server, token: str) -> None:
    cookie, csrf = login(server, token)
    http = browser(server)
    assert http.request("GET", VMS, headers=cookie).status == 200
    assert http.request("GET", "/console/", headers=cookie, accept="text/html").status == 200
    namespace = {"metadata": {"name": "from-console"}}
    refused = http.request("POST", "/api/v1/namespaces", namespace, headers=cookie)
    assert refused.status == 403 and "x-csrf-token" in refused.body["message"]
    wrong = http.request("POST", "/api/v1/namespaces", namespace,
                         headers={**cookie, "X-CSRF-Token": "0" * 64})
    assert wrong.status == 403
    made = http.request("POST", "/api/v1/namespaces", namespace,
                        headers={**cookie, "X-CSRF-Token": csrf})
    assert made.status == 201, made.raw


def test_a_revoked_token_ends_the_session(server: Server) -> None:
    token = issue_token(server, "short-lived", "system:masters")
    cookie, _ = login(server, token)
    assert browser(server).request("GET", VMS, headers=cookie).status == 200
    name = token.split(".")[0]
    assert Http(server).request("PATCH", f"/apis/identity.evroc-compute.io/v1/credentials/{name}",
                                {"spec": {"revoked": True}},
                                content_type="application/merge-patch+json").status == 200
    reply = browser(server).request("GET", VMS, headers=cookie)
    assert reply.status == 401 and "revoked" in reply.body["message"]
    page = browser(server).request("GET", "/console/", headers=cookie, accept="text/html")
    assert page.status == 303 and page.headers["location"] == "/console/login"  # signed out


def test_logout_clears_the_cookies(server: Server, token: str) -> None:
    cookie, csrf = login(server, token)
    assert browser(server).request("DELETE", "/console/session", headers=cookie).status == 403
    reply = browser(server).request("DELETE", "/console/session",
                                    headers={**cookie, "X-CSRF-Token": csrf})
    assert reply.status == 200
    assert all("Max-Age=0" in header for header in reply.set_cookies)


def test_a_users_refused_write_is_the_apis_status(server: Server) -> None:
    cookie, csrf = login(server, issue_token(server, "viewer"))
    reply = browser(server).request("POST", "/api/v1/namespaces", {"metadata": {"name": "no"}},
                                    headers={**cookie, "X-CSRF-Token": csrf})
    assert reply.status == 403 and reply.body["reason"] == "Forbidden"
    assert 'User "viewer" cannot create resource "namespaces"' in reply.body["message"]


def test_the_serial_console_is_authorized_as_a_subresource(server: Server) -> None:
    reply = Http(server, token=issue_token(server, "reader")).request(
        "GET", f"{VMS}/web/console", accept="text/plain")
    assert reply.status == 403
    assert 'cannot get resource "virtualmachines/console"' in reply.body["message"]


def test_without_an_issuer_there_is_no_oidc_sign_in(server: Server) -> None:
    for path in ("/console/oidc", "/console/oidc/login", "/console/oidc/callback?code=x"):
        reply = browser(server).request("GET", path)
        assert reply.status == 404 and "no OIDC issuer" in reply.body["message"], path
