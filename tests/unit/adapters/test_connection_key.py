"""The operator's TLS material from Secrets: bad PEM is named, never a crash at connect time."""

from __future__ import annotations

import pytest
import trustme

from jetpool_operator.adapters.nats import ConnectionKey, InvalidTlsMaterial

CA = trustme.CA()
CLIENT = CA.issue_cert("jetpool-client")
OTHER = trustme.CA().issue_cert("someone-else")


def pem(blob: trustme.Blob) -> str:
    return blob.bytes().decode()


def test_no_tls_material_means_no_tls_context() -> None:
    assert ConnectionKey("nats://n:4222").tls_context() is None


def test_a_ca_bundle_and_a_matching_client_pair_make_a_context() -> None:
    key = ConnectionKey(
        "tls://n:4222",
        tls_ca=pem(CA.cert_pem),
        tls_cert=pem(CLIENT.cert_chain_pems[0]),
        tls_key=pem(CLIENT.private_key_pem),
    )
    assert key.tls_context() is not None


@pytest.mark.parametrize(
    ("ca", "problem"),
    [
        ("", "the CA bundle is empty"),
        ("  \n", "the CA bundle is empty"),
        ("not a certificate", "not a PEM CA certificate bundle"),
        ("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n", "not a PEM CA"),
    ],
)
def test_a_ca_that_is_not_pem_names_the_ca(ca: str, problem: str) -> None:
    with pytest.raises(InvalidTlsMaterial, match=problem) as caught:
        ConnectionKey("tls://n:4222", tls_ca=ca).tls_context()
    assert caught.value.role == "ca"


def test_a_client_key_of_another_certificate_names_the_pair() -> None:
    key = ConnectionKey(
        "tls://n:4222",
        tls_ca=pem(CA.cert_pem),
        tls_cert=pem(CLIENT.cert_chain_pems[0]),
        tls_key=pem(OTHER.private_key_pem),
    )
    with pytest.raises(InvalidTlsMaterial, match="not a matching PEM pair") as caught:
        key.tls_context()
    assert caught.value.role == "cert"
