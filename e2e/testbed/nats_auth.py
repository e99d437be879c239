"""Everything a secured nats-server and its clients need, made in a directory with no tools.

* **TLS**: a throwaway CA, a server certificate for the DNS names and IPs the caller gives
  (the names clients dial) and a client certificate for mutual TLS (``trustme``).
* **Decentralized JWT auth** (what ``nsc`` would make): an operator, a system account, one
  account per tenant with JetStream enabled in its limits, users with ``.creds`` files. All
  JWTs are v2 (``alg: ed25519-nkey``, claims type and limits under ``nats``) signed with nkeys,
  in the layout of github.com/nats-io/jwt (``v2/*_claims.go``, ``v2/creds_utils.go``).
* **The server config fragment** (:func:`render_server_config`): ``operator``,
  ``system_account``, ``resolver: MEMORY`` with every account JWT preloaded, and a ``tls``
  block whose file paths the caller chooses (``/etc/nats/tls/...`` in a pod, the local
  files here), so the same text serves a local process and an in-cluster ConfigMap.

Secrets (seeds, keys, ``.creds``) are written with mode 0600 and kept out of reprs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import nkeys
import trustme

from jetpool_protocol.credentials import UserCredentials, format_creds, parse_credentials

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1
JETSTREAM_UNLIMITED = {
    "mem_storage": UNLIMITED,
    "disk_storage": UNLIMITED,
    "streams": UNLIMITED,
    "consumer": UNLIMITED,
}
"""Account limits that enable JetStream (memory or disk storage not 0), without caps."""


class NkeyKind(IntEnum):
    """The nkey prefix bytes (public keys start with O, A, U)."""

    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
    USER = nkeys.PREFIX_BYTE_USER


@dataclass(frozen=True, slots=True)
class Nkey:
    public_key: str
    seed: str = field(repr=False)


def new_nkey(kind: NkeyKind) -> Nkey:
    """A fresh random nkey of ``kind``."""
    seed = nkeys.encode_seed(os.urandom(32), int(kind)).decode()
    return Nkey(public_key=public_key(seed), seed=seed)


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_jwt(
    subject: str,
    name: str,
    nats: Mapping[str, Any],
    issuer_seed: str,
    *,
    issued_at: int | None = None,
    expires_at: int | None = None,
    not_before: int | None = None,
) -> str:
    """A signed v2 NATS JWT, as jwt.ClaimsData.doEncode makes it.

    ``jti`` is the base32 SHA-512/256 of the standard claims without it, ``iss`` the
    public key of ``issuer_seed``, and the signature covers ``header.claims``.
    """
    claims: dict[str, Any] = {}
    if expires_at:
        claims["exp"] = expires_at
    claims["iat"] = int(time.time()) if issued_at is None else issued_at
    claims["iss"] = public_key(issuer_seed)
    claims["name"] = name
    if not_before:
        claims["nbf"] = not_before
    claims["sub"] = subject
    jti = base64.b32encode(hashlib.new("sha512_256", _compact(claims)).digest()).rstrip(b"=")
    ordered = {"jti": jti.decode(), **claims, "nats": {**nats, "version": 2}}
    signing_input = f"{_b64url(_compact(JWT_HEADER))}.{_b64url(_compact(ordered))}"
    signer = nkeys.from_seed(bytearray(issuer_seed.encode()))
    return f"{signing_input}.{_b64url(signer.sign(signing_input.encode()))}"


# --- the pieces of a setup ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NatsAccount:
    name: str
    public_key: str
    jwt: str
    seed: str = field(repr=False)
    jetstream: bool


@dataclass(frozen=True, slots=True)
class NatsUser:
    account: str
    """Name of the account the user belongs to."""
    name: str
    public_key: str
    jwt: str
    seed: str = field(repr=False)
    creds_file: Path

    @property
    def creds(self) -> str:
        """The ``.creds`` file's content (what a Kubernetes Secret holds)."""
        return format_creds(self.jwt, self.seed)

    def credentials(self) -> UserCredentials:
        return parse_credentials(self.creds)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files, all signed by one throwaway CA."""

    ca_file: Path
    cert_file: Path
    """Server certificate, valid for the DNS names and IPs given at creation."""
    key_file: Path
    client_cert_file: Path
    """Client certificate for mutual TLS (``verify_clients``)."""
    client_key_file: Path


@dataclass(frozen=True, slots=True)
class ServerTlsPaths:
    """Where the *server* finds its TLS files (its own paths, e.g. a mounted Secret)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    """Needed only with ``verify_clients``: the CA that signs client certificates."""


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """A complete operator/account/user + TLS setup, and where its files are."""

    directory: Path
    operator_name: str
    operator_public_key: str
    operator_jwt: str
    operator_seed: str = field(repr=False)
    system_account: NatsAccount = field(repr=False)
    accounts: tuple[NatsAccount, ...] = field(repr=False)
    """Tenant accounts (JetStream enabled), in creation order."""
    users: tuple[NatsUser, ...] = field(repr=False)
    tls: TlsFiles = field(repr=False)

    def account(self, name: str) -> NatsAccount:
        for account in (*self.accounts, self.system_account):
            if account.name == name:
                return account
        raise KeyError(f"no account {name!r}")

    def user(self, account: str, name: str = "default") -> NatsUser:
        for user in self.users:
            if (user.account, user.name) == (account, name):
                return user
        raise KeyError(f"no user {name!r} in account {account!r}")

    def local_tls_paths(self) -> ServerTlsPaths:
        """The files in :attr:`directory`, for a server on this machine."""
        return ServerTlsPaths(
            cert_file=str(self.tls.cert_file),
            key_file=str(self.tls.key_file),
            ca_file=str(self.tls.ca_file),
        )


def _write(path: Path, text: str, *, secret: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if secret:
        path.touch(mode=0o600)
        path.chmod(0o600)
    path.write_text(text)
    return path


def _user_nats_claims(
    issuer_account: str | None = None, permissions: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "pub": dict((permissions or {}).get("pub", {})),
        "sub": dict((permissions or {}).get("sub", {})),
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
    }
    if issuer_account:
        claims["issuer_account"] = issuer_account
    claims["type"] = "user"
    return claims


def _account_nats_claims(*, jetstream: bool) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "imports": UNLIMITED,
        "exports": UNLIMITED,
        "wildcards": True,
        "conn": UNLIMITED,
        "leaf": UNLIMITED,
    }
    if jetstream:
        limits.update(JETSTREAM_UNLIMITED)
    return {
        "limits": limits,
        "default_permissions": {"pub": {}, "sub": {}},
        "authorization": {},
        "type": "account",
    }


def _new_account(name: str, operator_seed: str, *, jetstream: bool) -> NatsAccount:
    key = new_nkey(NkeyKind.ACCOUNT)
    jwt = encode_jwt(key.public_key, name, _account_nats_claims(jetstream=jetstream), operator_seed)
    return NatsAccount(name, key.public_key, jwt, key.seed, jetstream)


def issue_user(
    directory: Path,
    account: NatsAccount,
    name: str,
    *,
    expires_at: datetime | None = None,
    not_before: datetime | None = None,
    permissions: Mapping[str, Any] | None = None,
) -> NatsUser:
    """A new user of ``account`` (signed by the account's own key) with its ``.creds`` file
    at ``<directory>/creds/<account>/<name>.creds``; ``permissions`` are the JWT's
    ``pub``/``sub`` claims (``{"pub": {"allow": [...]}, "sub": {...}}``), unrestricted if
    omitted."""
    key = new_nkey(NkeyKind.USER)
    jwt = encode_jwt(
        key.public_key,
        name,
        _user_nats_claims(permissions=permissions),
        account.seed,
        expires_at=int(expires_at.timestamp()) if expires_at else None,
        not_before=int(not_before.timestamp()) if not_before else None,
    )
    path = directory / "creds" / account.name / f"{name}.creds"
    _write(path, format_creds(jwt, key.seed), secret=True)
    return NatsUser(account.name, name, key.public_key, jwt, key.seed, path)


def write_account_seed(auth: NatsAuth, name: str) -> Path:
    """The seed of account ``name`` at ``<directory>/accounts/<name>.nk`` (mode 0600), beside
    its JWT: with :func:`load_account`, what a client needs to issue more users of the account
    (a server with the account preloaded accepts any user JWT the account's key signs)."""
    account = auth.account(name)
    return _write(auth.directory / "accounts" / f"{name}.nk", account.seed + "\n", secret=True)


def load_account(seed_file: Path) -> NatsAccount:
    """The account whose seed :func:`write_account_seed` wrote, with its JWT from beside it
    (``<name>.jwt``); fails if the two are not the same account."""
    seed = seed_file.read_text().strip()
    jwt = seed_file.with_suffix(".jwt").read_text().strip()
    payload = jwt.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if claims["sub"] != public_key(seed):
        raise ValueError(f"{seed_file} is not the seed of the account in its JWT ({claims['sub']})")
    limits = claims["nats"].get("limits", {})
    jetstream = any(limits.get(k, 0) != 0 for k in ("mem_storage", "disk_storage"))
    return NatsAccount(claims["name"], claims["sub"], jwt, seed, jetstream)


def _make_tls(directory: Path, dns_names: Iterable[str], ip_addresses: Iterable[str]) -> TlsFiles:
    ca = trustme.CA(organization_name="jetpool test CA")
    identities = [*dns_names, *ip_addresses]
    if not identities:
        raise ValueError("the server certificate needs at least one DNS name or IP address")
    server = ca.issue_cert(*identities, common_name=identities[0])
    client = ca.issue_cert("jetpool-client", common_name="jetpool-client")
    tls = directory / "tls"

    def pem(cert: trustme.LeafCert) -> str:
        return b"".join(p.bytes() for p in cert.cert_chain_pems).decode()

    return TlsFiles(
        ca_file=_write(tls / "ca.crt", ca.cert_pem.bytes().decode()),
        cert_file=_write(tls / "tls.crt", pem(server)),
        key_file=_write(tls / "tls.key", server.private_key_pem.bytes().decode(), secret=True),
        client_cert_file=_write(tls / "client.crt", pem(client)),
        client_key_file=_write(
            tls / "client.key", client.private_key_pem.bytes().decode(), secret=True
        ),
    )


def create_nats_auth(
    directory: Path,
    *,
    accounts: Sequence[str] = ("jetpool",),
    users: Sequence[str] = ("default",),
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    operator_name: str = "jetpool-test",
) -> NatsAuth:
    """Make a fresh setup in ``directory``: every account in ``accounts`` (JetStream on) gets
    every user in ``users``; the system account ``SYS`` gets a user ``sys``."""
    if len(set(accounts)) != len(accounts) or "SYS" in accounts:
        raise ValueError("account names must be unique and not SYS")
    directory.mkdir(parents=True, exist_ok=True)
    operator = new_nkey(NkeyKind.OPERATOR)
    system = _new_account("SYS", operator.seed, jetstream=False)
    operator_jwt = encode_jwt(
        operator.public_key,
        operator_name,
        {"system_account": system.public_key, "type": "operator"},
        operator.seed,
    )
    _write(directory / "operator.jwt", operator_jwt)
    tenants = tuple(_new_account(name, operator.seed, jetstream=True) for name in accounts)
    for account in (system, *tenants):
        _write(directory / "accounts" / f"{account.name}.jwt", account.jwt)
    made = [issue_user(directory, system, "sys")]
    made += [issue_user(directory, a, name) for a in tenants for name in users]
    auth = NatsAuth(
        directory=directory,
        operator_name=operator_name,
        operator_public_key=operator.public_key,
        operator_jwt=operator_jwt,
        operator_seed=operator.seed,
        system_account=system,
        accounts=tenants,
        users=tuple(made),
        tls=_make_tls(directory, dns_names, ip_addresses),
    )
    _write(directory / "server-auth.conf", render_server_config(auth, auth.local_tls_paths()))
    return auth


def _quoted(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid NATS config string


def render_server_config(
    auth: NatsAuth,
    tls: ServerTlsPaths,
    *,
    verify_clients: bool = False,
    tls_timeout_seconds: float = 2.0,
) -> str:
    """The nats-server config fragment for ``auth``: trust, accounts and TLS.

    Include it in (or append it to) a config that sets ``listen`` and ``jetstream``. File
    paths in ``tls`` are the server's own (e.g. ``/etc/nats/tls/tls.crt`` in a pod). With
    ``verify_clients`` every client must present a certificate signed by ``tls.ca_file``.
    """
    if verify_clients and not tls.ca_file:
        raise ValueError("verify_clients needs tls.ca_file")
    lines = [
        "# NATS decentralized auth (operator, accounts, users: JWT + nkeys) and TLS.",
        f"# operator {auth.operator_name}: {auth.operator_public_key}",
        f"operator: {_quoted(auth.operator_jwt)}",
        f"system_account: {_quoted(auth.system_account.public_key)}",
        "resolver: MEMORY",
        "resolver_preload: {",
    ]
    for account in (auth.system_account, *auth.accounts):
        lines += [f"  # {account.name}", f"  {account.public_key}: {_quoted(account.jwt)}"]
    lines += [
        "}",
        "tls {",
        f"  cert_file: {_quoted(tls.cert_file)}",
        f"  key_file: {_quoted(tls.key_file)}",
    ]
    if tls.ca_file:
        lines.append(f"  ca_file: {_quoted(tls.ca_file)}")
    if verify_clients:
        lines.append("  verify: true")
    lines += [f"  timeout: {tls_timeout_seconds:g}", "}"]
    return "\n".join(lines) + "\n"
