"""A throw-away certificate authority for TLS tests (python `cryptography`): a CA, a server
certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(**parts) -> "x509.Name":
    oids = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "O": NameOID.ORGANIZATION_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts.items()])


def _cert(subject, issuer, key, issuer_key, ca: bool, san: bool):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(d: Path) -> dict[str, Path]:
    """Writes a CA, a server certificate for 127.0.0.1/localhost (alone, and with its key in
    one file), a second one to renew it with (`renewed_server_pem`, `renewed_server_cert`) and
    a client certificate into `d`; returns their paths by name."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(CN="Strata Test CA")
    ca = _cert(ca_name, ca_name, ca_key, ca_key, ca=True, san=False)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(_name(CN="localhost"), ca_name, server_key, ca_key, ca=False, san=True)
    renewed_key = ec.generate_private_key(ec.SECP256R1())
    renewed = _cert(_name(CN="localhost"), ca_name, renewed_key, ca_key, ca=False, san=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert(_name(O="Strata", OU="eng", CN="client"), ca_name, client_key, ca_key, ca=False, san=False)
    files = {
        "ca": _pem_cert(ca),
        "server_pem": _pem_key(server_key) + _pem_cert(server) + _pem_cert(ca),
        "server_key": _pem_key(server_key),
        "server_chain": _pem_cert(server) + _pem_cert(ca),
        "renewed_server_pem": _pem_key(renewed_key) + _pem_cert(renewed) + _pem_cert(ca),
        "renewed_server_cert": renewed.public_bytes(serialization.Encoding.DER),
        "client_key": _pem_key(client_key),
        "client_cert": _pem_cert(client),
    }
    out = {}
    for name, data in files.items():
        path = d / f"{name}.pem"
        path.write_bytes(data)
        out[name] = path
    return out
