"""A real multi-node Ray cluster on this machine, for the cluster tests and benchmarks.

Each node is its own raylet (``ray.cluster_utils.Cluster``) with its own temp folder and its
own buildsys node store (``BUILDSYS_NODE_STORE`` in its environment, which its workers
inherit). A node may pin fingerprint fields (``BUILDSYS_FINGERPRINT_OVERRIDE``): that is how
one machine hosts a heterogeneous cluster, a "GPU class" whose nodes really report another GPU
model and driver to the probe and to the stages they run.

    python tests/ray_cluster.py --nodes 4 --cpus 2    # prints the address, runs until killed
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GPU_CLASS = {"gpu": "NVIDIA Simulated H100", "driver": "999.99"}


@dataclass
class NodeSpec:
    name: str
    cpus: int = 1
    gpus: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    fingerprint: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalCluster:
    """A started cluster: its address, nodes by name and each node's store folder."""

    cluster: Any
    root: Path
    nodes: dict[str, Any] = field(default_factory=dict)
    stores: dict[str, Path] = field(default_factory=dict)
    specs: dict[str, NodeSpec] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def env(self) -> dict[str, str]:
        """What a client's environment needs to build on this cluster (``--executor ray``)."""
        return {"RAY_ADDRESS": self.address}

    def add(self, spec: NodeSpec) -> Any:
        temp = self.root / spec.name
        store = self.root / f"{spec.name}-store"
        env = {"BUILDSYS_NODE_STORE": str(store)}
        if spec.fingerprint:
            env["BUILDSYS_FINGERPRINT_OVERRIDE"] = ",".join(f"{k}={v}" for k, v in spec.fingerprint.items())
        node = self.cluster.add_node(
            num_cpus=spec.cpus, num_gpus=spec.gpus, resources=dict(spec.resources), env_vars=env, temp_dir=str(temp),
            object_store_memory=96 << 20, include_dashboard=False,
        )
        self.nodes[spec.name] = node
        self.stores[spec.name] = store
        self.specs[spec.name] = spec
        return node

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def restore(self, name: str) -> None:
        """A removed node back: a new raylet of the same spec, over the same node store."""
        self.add(self.specs[name])
        self.cluster.wait_for_nodes()

    def shutdown(self) -> None:
        self.cluster.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)


def start(specs: list[NodeSpec]) -> LocalCluster:
    """A cluster of ``specs`` (the first is the head). Short temp folders: Ray's sockets live
    under them and a Unix socket path holds at most 107 bytes."""
    from ray.cluster_utils import Cluster

    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    local = LocalCluster(Cluster(initialize_head=False, shutdown_at_exit=True), root)
    for spec in specs:
        local.add(spec)
    local.cluster.wait_for_nodes()
    return local


def three_nodes() -> list[NodeSpec]:
    """The tests' cluster: a head, a CPU worker and a GPU-class worker with 40 GB of VRAM (its
    GPU simulated: Ray's resource and a pinned fingerprint; the stages it runs use the CPU)."""
    return [
        NodeSpec("head"),
        NodeSpec("cpu1", resources={"worker": 1}),
        NodeSpec("gpu1", gpus=1, resources={"worker": 1, "vram_gb": 40}, fingerprint=GPU_CLASS),
    ]


def build_records(store: Path) -> list[dict[str, Any]]:
    """Every build record of the store at ``store``, oldest first."""
    from buildsys.store.build_record import read_record
    from buildsys.store.local import LocalStore

    local = LocalStore(store)
    return [read_record(local, digest) for _, digest in local.builds.listing()]


@dataclass
class Comparison:
    """Two builds of one project (on the cluster and here) stage by stage (:func:`compare_builds`)."""

    stages: int
    stochastic: dict[str, bool]
    """The stochastic stages, excluded by the contract, and whether their bytes were the same anyway."""
    compared: list[str]
    """The deterministic stages with the same key in both builds (the same inputs)."""
    differing: list[str]
    """Of those, the ones whose output trees differ: a broken contract."""
    unexplained: list[str]
    """Deterministic stages with another key whose inputs are not explained by a stochastic
    stage's other bytes upstream: a key that depends on where the client ran."""


def compare_builds(ray: Path, local: Path) -> Comparison:
    """Compare every stage's output tree between the builds in project folders ``ray`` and
    ``local``. A deterministic stage with the same key must have the same tree; one with another
    key must read, and only read, trees that differ because a stochastic stage upstream made
    other bytes with the same seed (allowed by the contract), else it is unexplained."""
    from buildsys.keys.encoding import decode
    from buildsys.store.local import LocalStore

    stores = {root: LocalStore(root / "store") for root in (ray, local)}

    def refs(root: Path) -> dict[str, dict[str, Any]]:
        store = stores[root]
        return {f"{t}/{s}": e for t in store.refs.names("targets") for s, e in store.refs.read("targets", t)["stages"].items()}

    def described(root: Path, entry: dict[str, Any]) -> dict[str, Any]:
        return decode(stores[root].blobs.read(entry["description"]))

    def reads(root: Path, entry: dict[str, Any]) -> set[str]:
        d = described(root, entry)
        return set(d["inputs"].values()) | ({d["model"]["digest"]} if d["model"] else set())

    theirs, ours = refs(ray), refs(local)
    if theirs.keys() != ours.keys():
        raise ValueError(f"the builds made other stages: {sorted(theirs.keys() ^ ours.keys())}")
    stochastic = {sid: theirs[sid]["tree"] == ours[sid]["tree"] for sid, e in theirs.items() if described(ray, e)["mode"] == "stochastic"}
    deterministic = sorted(set(theirs) - set(stochastic))
    compared = [sid for sid in deterministic if theirs[sid]["key"] == ours[sid]["key"]]
    other_bytes = {theirs[sid]["tree"] for sid, same in stochastic.items() if not same}
    other = {sid: reads(ray, theirs[sid]) - reads(local, ours[sid]) for sid in deterministic if sid not in compared}
    while explained := [sid for sid, trees in other.items() if trees and trees <= other_bytes]:
        for sid in explained:
            other_bytes.add(theirs[sid]["tree"])
            del other[sid]
    differing = [sid for sid in compared if theirs[sid]["tree"] != ours[sid]["tree"]]
    return Comparison(len(theirs), stochastic, compared, differing, sorted(other))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=1)
    args = parser.parse_args()
    cluster = start([NodeSpec("head" if i == 0 else f"n{i}", cpus=args.cpus) for i in range(args.nodes)])
    print(cluster.address, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
