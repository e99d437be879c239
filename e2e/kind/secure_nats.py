"""Install the kind e2e run's NATS: JetStream, JWT accounts (operator, SYS, ``jetpool``) and TLS.

Called by ``e2e/kind/run.sh``. Makes the credentials and certificates with
:mod:`e2e.testbed.nats_auth` (the local test bed uses the same module), stores the server's
config, certificate and key in the Secret ``nats/nats-config``, prepares the JetStream store's
hostPath directory on the node with the server's uid, applies ``e2e/kind/nats.yaml``, and
writes ``<state>/env``: the variables the e2e suite reads (URLs, the ``.creds`` file and CA a
client outside the cluster uses, and the account's seed file, 0600, with which a test issues
users of its own, such as a per-pool user with exactly a pool's permissions).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from e2e.testbed.nats_auth import (  # noqa: E402
    ServerTlsPaths,
    create_nats_auth,
    render_server_config,
    write_account_seed,
)

NAMESPACE = "nats"
CLUSTER_IP = "10.96.42.22"
"""Fixed in nats.yaml: the registry-less cluster has no DNS, so clients dial the IP."""
NODE_PORT = 30422
STORE_ON_NODE = "/var/local/jetpool-nats"
SERVER_UID = 1000
ACCOUNT = "jetpool"


def server_config(auth_fragment: str) -> str:
    return "\n".join(
        [
            "port: 4222",
            "http_port: 8222",
            "server_name: nats-e2e",
            "max_payload: 8MB",
            "jetstream {",
            "  store_dir: /data",
            "  max_memory_store: 256MB",
            "  max_file_store: 1GB",
            "}",
            auth_fragment,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--image", required=True, help="the NATS image loaded into the node")
    parser.add_argument("--state", required=True, type=Path, help="where credentials go")
    parser.add_argument("--node", default="jetpool-e2e-control-plane", help="kind node container")
    args = parser.parse_args()

    def kubectl(*argv: str, stdin: str | None = None) -> None:
        subprocess.run(
            [args.kubectl, "--kubeconfig", args.kubeconfig, *argv],
            input=stdin,
            text=True,
            check=True,
            stdout=sys.stderr,
        )

    auth = create_nats_auth(
        args.state,
        accounts=(ACCOUNT,),
        dns_names=(f"nats.{NAMESPACE}.svc", f"nats.{NAMESPACE}.svc.cluster.local", "localhost"),
        ip_addresses=(CLUSTER_IP, "127.0.0.1"),
    )
    fragment = render_server_config(
        auth,
        ServerTlsPaths(cert_file="/etc/nats/tls.crt", key_file="/etc/nats/tls.key"),
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "nats-config", "namespace": NAMESPACE},
        "stringData": {
            "nats.conf": server_config(fragment),
            "tls.crt": auth.tls.cert_file.read_text(),
            "tls.key": auth.tls.key_file.read_text(),
        },
    }
    subprocess.run(
        [
            "docker",
            "exec",
            args.node,
            "sh",
            "-c",
            f"mkdir -p {STORE_ON_NODE} && chown {SERVER_UID}:{SERVER_UID} {STORE_ON_NODE}",
        ],
        check=True,
    )
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        ),
    )
    kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    manifest = (REPO / "e2e" / "kind" / "nats.yaml").read_text()
    kubectl("apply", "-f", "-", stdin=manifest.replace("jetpool-e2e-nats:2.15.1", args.image))

    user = auth.user(ACCOUNT)
    account_seed = write_account_seed(auth, ACCOUNT)
    env = {
        "JETPOOL_E2E_NATS_URL": f"tls://{CLUSTER_IP}:4222",
        "JETPOOL_E2E_NATS_TEST_URL": f"tls://127.0.0.1:{NODE_PORT}",
        "JETPOOL_E2E_NATS_CREDS": str(user.creds_file),
        "JETPOOL_E2E_NATS_CA": str(auth.tls.ca_file),
        "JETPOOL_E2E_NATS_ACCOUNT_SEED": str(account_seed),
    }
    (args.state / "env").write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    )


if __name__ == "__main__":
    main()
