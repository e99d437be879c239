"""The local test bed, as Python: launchers for every real service jetpool is tested against.

Used by the pytest fixtures, ``make demo`` and the benchmarks alike: a nats-server with
JetStream, the local Kubernetes cluster (``e2e/cluster.sh``), the operator as a process, and
the pod runner that backs worker pods with real ``jetpool-worker`` processes.
"""
