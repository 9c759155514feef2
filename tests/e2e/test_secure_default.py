"""The secure default, through kubectl and the Python client: a fresh server makes its PKI and
serves HTTPS, the admin kubeconfig works, anonymous requests reach only the health and version
paths, a wrong CA is refused, plain HTTP only on loopback, an operator's certificate is used,
and the serving certificate follows the listen address."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from evroc_compute.server.auth.pki import Pki
from tests.conftest import ROOT, Kubectl, free_port, kubectl_binary, start_server


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evroc_compute.cli", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def launch(data_dir: Path, *extra: str, host: str = "127.0.0.1",
           ca: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A server on `host` whose readiness is checked trusting `ca` (default: its own PKI's)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "evroc_compute.cli", "serve", "--host", host, "--port", str(port),
         "--data-dir", str(data_dir), "--no-controllers", *extra],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"https://{host}:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            context = ssl.create_default_context(cafile=str(ca or data_dir / "pki" / "ca.crt"))
            with urllib.request.urlopen(f"{url}/readyz", timeout=1, context=context):
                return process, url
        except (OSError, ssl.SSLError):
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not become ready: {log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(15)


def kubectl_with(config: str, tmp: Path, name: str = "kubeconfig") -> Kubectl:
    path = tmp / name
    path.write_text(config)
    return Kubectl(kubectl_binary(), path, tmp / "kubectl-cache")


def anonymous(server_ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server_ca))


def test_a_fresh_server_makes_its_pki_and_its_admin_kubeconfig_works(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        pki = Pki(tmp_path / "data" / "pki")
        for path in (pki.ca_cert, pki.serving_cert, pki.client_ca_cert, pki.admin_cert):
            assert path.exists(), path
        for key in (pki.ca_key, pki.serving_key, pki.client_ca_key, pki.admin_key):
            assert key.stat().st_mode & 0o077 == 0, f"{key} is readable by others"
        printed = cli("kubeconfig", "--data-dir", str(tmp_path / "data"), "--server", server.url)
        assert printed.returncode == 0, printed.stderr
        kubectl = kubectl_with(printed.stdout, tmp_path)
        assert kubectl("get", "namespace", "default", "-o", "name").strip() == "namespace/default"
        assert kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
                       ) == server.url

        from kubernetes import client, config
        api = client.CoreV1Api(config.new_client_from_config(str(kubectl.kubeconfig)))
        assert "default" in [n.metadata.name for n in api.list_namespace().items]
    finally:
        server.stop()


def test_anonymous_requests_reach_only_health_and_version(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        context = anonymous(server.ca)
        for path in ("/healthz", "/readyz", "/livez", "/version"):
            with urllib.request.urlopen(server.url + path, context=context) as answer:
                assert answer.status == 200, path
        for path in ("/api/v1/namespaces", "/apis/compute.evroclabs.net/v1alpha1/virtualmachines",
                     "/metrics", "/openapi/v3", "/apis"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.url + path, context=context)
            status = json.loads(refused.value.read())
            assert refused.value.code == 401, path
            assert (status["kind"], status["reason"]) == ("Status", "Unauthorized")
            assert "needs a credential" in status["message"]
    finally:
        server.stop()


def test_kubectl_refuses_a_server_whose_certificate_another_ca_signed(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        other = Pki(tmp_path / "other")
        other.ensure([])
        wrong = kubectl_with(server.kubeconfig().replace(
            _b64(server.ca.read_bytes()), _b64(other.ca_cert.read_bytes())), tmp_path)
        refused = wrong.run("get", "vm", check=False)
        assert refused.returncode != 0
        assert "x509" in refused.stderr and "unknown authority" in refused.stderr, refused.stderr
    finally:
        server.stop()


def test_plain_http_only_on_loopback_and_still_authenticated(tmp_path: Path) -> None:
    refused = cli("serve", "--insecure-http", "--host", "0.0.0.0", "--port", str(free_port()),
                  "--data-dir", str(tmp_path / "refused"), "--no-controllers")
    assert refused.returncode != 0
    assert "non-loopback" in refused.stderr and "0.0.0.0" in refused.stderr
    server = start_server(tmp_path / "data", "--insecure-http")
    try:
        assert server.url.startswith("http://")
        with urllib.request.urlopen(server.url + "/healthz") as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as unauthenticated:
            urllib.request.urlopen(server.url + "/api/v1/namespaces")
        assert unauthenticated.value.code == 401
    finally:
        server.stop()


def test_an_operators_certificate_is_served(tmp_path: Path) -> None:
    operator = Pki(tmp_path / "operator")  # another CA, as an operator's would be
    operator.ensure(["127.0.0.1"])
    data = tmp_path / "data"
    process, url = launch(data, "--tls-cert", str(operator.serving_cert), "--tls-key",
                          str(operator.serving_key), ca=operator.ca_cert)
    try:
        served = ssl.get_server_certificate(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        assert x509.load_pem_x509_certificate(served.encode()) == \
            x509.load_pem_x509_certificate(operator.serving_cert.read_bytes())
        printed = cli("kubeconfig", "--data-dir", str(data), "--server", url,
                      "--certificate-authority", str(operator.ca_cert))
        assert printed.returncode == 0, printed.stderr
        assert "namespace/default" in kubectl_with(printed.stdout, tmp_path)(
            "get", "namespace", "default", "-o", "name")
        own_ca = cli("kubeconfig", "--data-dir", str(data), "--server", url)
        refused = kubectl_with(own_ca.stdout, tmp_path, "own").run("get", "vm", check=False)
        assert refused.returncode != 0 and "x509" in refused.stderr
    finally:
        stop(process)


def test_the_serving_certificate_is_remade_for_a_new_listen_address(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process, _ = launch(data)
    stop(process)
    pki = Pki(data / "pki")
    ca_before = pki.ca_cert.read_bytes()
    assert "127.0.0.2" not in _names(pki.serving_cert)
    process, url = launch(data, host="127.0.0.2")
    try:
        assert "127.0.0.2" in _names(pki.serving_cert)
        assert pki.ca_cert.read_bytes() == ca_before  # the kubeconfigs out there stay good
        printed = cli("kubeconfig", "--data-dir", str(data), "--server", url)
        assert "namespace/default" in kubectl_with(printed.stdout, tmp_path)(
            "get", "namespace", "default", "-o", "name")
    finally:
        stop(process)


def _names(cert: Path) -> set[str]:
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(v) for v in sans.get_values_for_type(x509.IPAddress)} | set(
        sans.get_values_for_type(x509.DNSName))


def _b64(data: bytes) -> str:
    import base64
    return base64.b64encode(data).decode()
