"""The build: from targets to materialized files (resolve keys, look up caches, run what
is missing, record the build)."""
