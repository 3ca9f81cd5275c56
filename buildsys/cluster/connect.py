"""Joining the Ray cluster a build names, or saying in one line why it cannot."""

from __future__ import annotations

import logging
import os
import socket

from buildsys.errors import EXIT_BAD_INPUT, BuildsysError
from buildsys.project.executor import ExecutorSettings

LEASE_REUSE_MS = "5000"
"""How long this client may keep a node's Ray worker for stages of one kind while more of
them wait (Ray's ``worker_lease_timeout_milliseconds``, read by the driver at ``ray.init``).
Ray's default, 500 ms, hands a worker back to its raylet after every stage longer than that
and asks for a new lease, a round trip through the raylets (and, for another node, through the
cluster's resource view, refreshed every 100 ms): measured here, 100 ms between stages on a
worker, a sixth of a 0.5 s stage (BENCHMARKS.md). Five seconds keep a worker busy from one
stage to the next, while a kind of stage waiting behind another still gets a worker within
five seconds. A ``RAY_worker_lease_timeout_milliseconds`` the user set is kept."""


class ClusterUnreachable(BuildsysError):
    """The cluster the build names cannot be joined: no address, nothing listening, Ray not
    installed. Exit 2: the build's executor setting cannot be used, and nothing ran."""

    exit_code = EXIT_BAD_INPUT


def connect(settings: ExecutorSettings) -> None:
    """Join the cluster at ``settings.address`` as a Ray driver. A ``host:port`` address is
    first tried with a plain TCP connection, so a cluster that is down is reported within
    ``connect_timeout_s`` instead of after Ray's own retries."""
    address = settings.address
    if not address:
        raise ClusterUnreachable(
            "--executor ray: no cluster address; set [executor] address in the Buildfile or the user config, or RAY_ADDRESS"
        )
    where = f"Ray cluster at {address} ({settings.where('address')})"
    if address not in ("auto", "local") and "://" not in address:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=settings.connect_timeout_s).close()
        except ValueError:
            raise ClusterUnreachable(f"{where}: not a host:port address") from None
        except OSError as exc:
            raise ClusterUnreachable(f"{where} is unreachable: {exc.strerror or exc}") from None
    try:
        import ray
    except ImportError:
        raise ClusterUnreachable("--executor ray: Ray is not installed (pip install 'buildsys[ray]')") from None
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_worker_lease_timeout_milliseconds", LEASE_REUSE_MS)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, namespace="buildsys", configure_logging=True)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for a cluster it cannot join
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterUnreachable(f"{where}: cannot join: {first}") from None


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
