"""The server's certificates: a serving CA and certificate, a client CA, client certificates.

On first start a server creates, in its PKI directory (default `DATA_DIR/pki`), what kubeadm
creates for a cluster: a CA for the serving certificate, a serving certificate for the listen
address, `localhost` and `127.0.0.1`, a client CA, an admin client certificate (CN `admin`,
O `system:masters`), the certificate the server presents to host agents' console
endpoints (CN `system:apiserver`, as kubeadm's apiserver-kubelet-client: signed by the CA the
agents' kubeconfigs trust, which the server's own client authentication does not, so it is
no credential for the API), and the control plane's own client certificates (kubeadm's
controller-manager.conf): CN `system:controller-manager` for the controllers and CN
`system:fleet-simulator` for the simulated fleet's agent, which `serve --controllers process`
gives its controllers process (`controllers.kubeconfig`); these need no Credential record.
Several servers of one database share one PKI directory, so one kubeconfig works against any
of them. Keys are written 0600 and never leave the directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evroc_compute.api.consolelog import API_SERVER_USER
from evroc_compute.server.auth.users import CONTROLLER_MANAGER, FLEET_SIMULATOR

CA_DAYS = 3650
SERVING_DAYS = 825
ADMIN_USER = "admin"
MASTERS_GROUP = "system:masters"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "serving.key"

    @property
    def client_ca_cert(self) -> Path:
        return self.directory / "client-ca.crt"

    @property
    def client_ca_key(self) -> Path:
        return self.directory / "client-ca.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def agent_client_cert(self) -> Path:
        """What the server presents to agents' console endpoints (hosts/console.py)."""
        return self.directory / "apiserver-agent-client.crt"

    @property
    def agent_client_key(self) -> Path:
        return self.directory / "apiserver-agent-client.key"

    @property
    def admin_token(self) -> Path:
        """The admin's bearer token (`admin.<secret>`): for the web console's login and for
        plain HTTP, where no client certificate can be presented."""
        return self.directory / "admin.token"

    @property
    def controllers_cert(self) -> Path:
        return self.directory / "controllers.crt"

    @property
    def controllers_key(self) -> Path:
        return self.directory / "controllers.key"

    @property
    def simulator_cert(self) -> Path:
        return self.directory / "fleet-simulator.crt"

    @property
    def simulator_key(self) -> Path:
        return self.directory / "fleet-simulator.key"

    @property
    def controllers_kubeconfig(self) -> Path:
        """The controllers process's kubeconfig (contexts `controllers` and `fleet-simulator`),
        which `serve --controllers process` writes for the child it starts."""
        return self.directory / "controllers.kubeconfig"

    @property
    def own_certificates(self) -> tuple[Path, ...]:
        """The client certificates of the PKI itself, accepted without a Credential record."""
        return self.admin_cert, self.controllers_cert, self.simulator_cert

    def ensure(self, hosts: list[str]) -> None:
        """Create whatever is missing; a serving certificate is remade when it does not cover
        `hosts` (the server was moved to another address)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if not self.ca_cert.exists():
            _write_ca(self.ca_cert, self.ca_key, "evroc-compute-ca")
        if not self.client_ca_cert.exists():
            _write_ca(self.client_ca_cert, self.client_ca_key, "evroc-compute-client-ca")
        names = sorted({"localhost", "127.0.0.1", *hosts} - {"", "0.0.0.0", "::"})
        if not self.serving_cert.exists() or not _covers(self.serving_cert, names):
            cert, key = issue(self.ca_cert, self.ca_key, "evroc-compute", (), SERVING_DAYS,
                              server_names=names)
            _write(self.serving_cert, cert, self.serving_key, key)
        if not self.admin_cert.exists():
            cert, key = issue(self.client_ca_cert, self.client_ca_key, ADMIN_USER,
                              (MASTERS_GROUP,), CA_DAYS)
            _write(self.admin_cert, cert, self.admin_key, key)
        if not self.agent_client_cert.exists():
            cert, key = issue(self.ca_cert, self.ca_key, API_SERVER_USER, (), SERVING_DAYS)
            _write(self.agent_client_cert, cert, self.agent_client_key, key)
        for cert_path, key_path, user in ((self.controllers_cert, self.controllers_key,
                                           CONTROLLER_MANAGER),
                                          (self.simulator_cert, self.simulator_key,
                                           FLEET_SIMULATOR)):
            if not cert_path.exists():
                cert, key = issue(self.client_ca_cert, self.client_ca_key, user, (), CA_DAYS)
                _write(cert_path, cert, key_path, key)
        if not self.admin_token.exists():
            write_private(self.admin_token, f"{ADMIN_USER}.{secrets.token_urlsafe(32)}".encode())


def issue(ca_cert: Path, ca_key: Path, common_name: str, organizations: tuple[str, ...],
          days: float, *, server_names: list[str] | None = None) -> tuple[bytes, bytes]:
    """A certificate (PEM) and its new key (PEM) signed by the CA: a client certificate for
    user `common_name` in groups `organizations`, or a serving one for `server_names`."""
    authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    authority_key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    assert isinstance(authority_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name(subject)).issuer_name(authority.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, True, False, False, False, False,
                                            False, False), critical=True))
    if server_names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_san(name) for name in server_names]), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(authority_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_self_signed(cert_path: Path, key_path: Path, common_name: str,
                       names: list[str]) -> None:
    """A self-signed serving certificate for `names` (and loopback), made unless one that
    covers them is there: a host agent's console endpoint, trusted by the certificate itself."""
    names = sorted({"localhost", "127.0.0.1", *names} - {"", "0.0.0.0", "::"})
    if cert_path.exists() and key_path.exists() and _covers(cert_path, names):
        return
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SERVING_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), key_path, _key_pem(key))


def serial_of(cert_pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")


def _write_ca(cert_path: Path, key_path: Path, name: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), key_path, _key_pem(key))


def _covers(cert_path: Path, names: list[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    present |= set(sans.get_values_for_type(x509.DNSName))
    return set(names) <= present


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(cert_path: Path, cert: bytes, key_path: Path, key: bytes) -> None:
    """The key first and 0600 from its creation; each file replaced whole (a crash leaves the
    old pair or the new one, and a serving pair is remade on the next start if mismatched)."""
    write_private(key_path, key)
    write_private(cert_path, cert, 0o644)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
