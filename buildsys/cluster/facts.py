"""What a node says about itself (its id, name, buildsys version and whole fingerprint), kept in
the cluster's own key-value store so that a build does not probe a node an earlier build did.

Probing a node costs a Ray worker started on it for the build's job (Ray starts workers per
driver): seconds of CPU per node on a busy machine, before any stage runs. A node's facts do not
change while its raylet runs, with one exception: a library upgraded in place. So every
:class:`buildsys.cluster.node.NodeRuntime` publishes the facts it sees when it starts (once per
Ray worker, i.e. at least once per build that runs a stage there), and the node itself refuses a
stage whose key names another value than its own (``misplaced``): a stale entry costs one clear
failure and is replaced by the build that got it, never a dishonest key.
"""

from __future__ import annotations

import json
from typing import Any

from buildsys import __version__

NAMESPACE = "buildsys"


def _key(node_id: str) -> bytes:
    return f"node-facts/{node_id}".encode()


def publish(facts: dict[str, Any]) -> None:
    """Keep a node's facts (from :func:`buildsys.cluster.node.probe`) for later surveys."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_key(facts["node"]), json.dumps(facts, sort_keys=True).encode(), overwrite=True, namespace=NAMESPACE)


def known(node_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The kept facts of these nodes that a node of this buildsys version published (a node of
    another version is probed again: what it says is news to this client)."""
    from ray.experimental import internal_kv

    found: dict[str, dict[str, Any]] = {}
    for node_id in node_ids:
        raw = internal_kv._internal_kv_get(_key(node_id), namespace=NAMESPACE)
        if not raw:
            continue
        try:
            facts = json.loads(raw)
        except ValueError:
            continue
        if isinstance(facts, dict) and facts.get("node") == node_id and facts.get("buildsys") == __version__ and isinstance(facts.get("fingerprint"), dict):
            found[node_id] = facts
    return found
