"""I/O adapters: the only modules of the operator that talk to Kubernetes or NATS."""
