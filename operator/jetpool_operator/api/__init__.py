"""The WorkerPool API: pydantic models (the single source of truth) and the CRD generator."""
