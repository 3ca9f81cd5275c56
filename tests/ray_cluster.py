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

    @property
    def address(self) -> str:
        return self.cluster.address

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
        return node

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

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
