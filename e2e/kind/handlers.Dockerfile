# syntax=docker/dockerfile:1
# The e2e handler image, and the example of a user's handler image: FROM the jetpool worker
# base image, add the handler code, nothing else. Here the handlers are the test suite's own
# (tests/ becomes the importable package `tests` under /app, which is on PYTHONPATH), so a
# WorkerPool names e.g. `handler: tests.worker.handlers:echo`.
#
#   docker build -f e2e/kind/handlers.Dockerfile --build-arg WORKER_IMAGE=jetpool-worker:e2e \
#     -t jetpool-e2e-handlers:e2e .
ARG WORKER_IMAGE=jetpool-worker:e2e
FROM ${WORKER_IMAGE}
COPY --chown=0:0 tests/ /app/tests/
