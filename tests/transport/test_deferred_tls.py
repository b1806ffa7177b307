"""aioquic's certificate-chain verification modules load on first use, not in every
node (quic_transport/deferred_tls.py), and still work when something uses them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CODE = textwrap.dedent(
    """
    import datetime, sys
    import p2pstore.node.grid_service, p2pstore.node.runner, p2pstore.web.server
    from quic_transport.deferred_tls import is_deferred
    names = ("certifi", "service_identity", "OpenSSL", "OpenSSL.crypto")
    print("deferred", *[n for n in names if is_deferred(n)])
    subs = ("OpenSSL.", "service_identity.")
    print("loaded", *sorted(m for m in sys.modules if m.startswith(subs) and not is_deferred(m)))

    # aioquic's own verification, through the stand-ins it imported
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from aioquic import tls
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.org")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    tls.verify_certificate(cert, server_name="example.org", cadata=pem)
    print("verified")
    try:
        tls.verify_certificate(cert, server_name="other.org", cadata=pem)
    except tls.AlertBadCertificate as e:
        print("refused", e)
    try:
        tls.verify_certificate(cert, server_name="example.org")  # certifi's roots
    except tls.AlertBadCertificate as e:
        print("unknown issuer", e)
    print("deferred", *[n for n in names if is_deferred(n)])
    """
)

PROBES = textwrap.dedent(
    """
    import importlib.util, sys
    import quic_transport, aioquic.tls
    from quic_transport.deferred_tls import is_deferred
    # libraries probing for optional packages still find them, without loading them
    found = [importlib.util.find_spec(n) is not None for n in ("certifi", "OpenSSL")]
    print(all(found), is_deferred("certifi"), is_deferred("OpenSSL"))
    import OpenSSL.SSL  # a submodule through the stand-in: the real package
    print(is_deferred("OpenSSL"), hasattr(OpenSSL.SSL, "Context"))
    """
)


def test_a_node_defers_them_and_aioquic_still_verifies_through_them() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=120
    )
    lines = proc.stdout.splitlines()
    # a node imports the whole transport and web stack, and none of the three
    assert lines[0].split() == [
        "deferred",
        "certifi",
        "service_identity",
        "OpenSSL",
        "OpenSSL.crypto",
    ]
    assert lines[1] == "loaded"
    assert lines[2] == "verified"
    assert lines[3].startswith("refused") and "'other.org' doesn't match" in lines[3]
    assert lines[4].startswith("unknown issuer")
    assert lines[5] == "deferred"  # all real now


def test_probes_and_submodule_imports_work_through_the_stand_ins() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBES], capture_output=True, text=True, check=True, timeout=120
    )
    assert proc.stdout.splitlines() == ["True True True", "False True"]
