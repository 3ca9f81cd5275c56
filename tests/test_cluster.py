"""Stages on a real Ray cluster (``--executor ray``): three raylets on this machine, each with its
own temp folder and node store, one of them a "GPU class" (a GPU and 40 GB of VRAM as Ray
resources, another GPU model and driver in its fingerprint): conftest's session ``cluster``, shared
with ``test_cluster_contract.py``; the test that removes a node puts it back. Every test on the
cluster is ``slow`` (about 90 s together, 5 s of it starting the cluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Project
from test_light_imports import _heavy_after

ray = pytest.importorskip("ray")

from ray_cluster import GPU_CLASS, build_records  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray-cluster")


def _buildfile(project: Project, body: str) -> None:
    """A Buildfile whose stages fit a node of one CPU (one thread each, whatever this machine has)."""
    project.buildfile_text(body, threads=1)


CLASS_STAGES = '''
        [targets.t.stages.cuda]
        recipe = "cluster_recipes:machine"
        device = "cuda"
        fingerprint = ["gpu", "driver"]
        [targets.t.stages.cpu]
        recipe = "cluster_recipes:machine"
        fingerprint = ["gpu"]
'''
"""A stage for the GPU class (its GPU and driver in its key) and one keyed by the GPU model only."""


@pytest.mark.slow
def test_keys_carry_the_executing_nodes_fingerprint(cluster, project: Project):
    """A stage declaring the GPU model is keyed with the node's, not the client's: a CUDA stage
    goes to the GPU class and its key says that class's GPU and driver; built on this machine
    the same stage has another key (no cache hit across classes), while a stage whose declared
    field is the same here as on the CPU class shares its result. A stage asking for VRAM runs
    on the only node offering it. plan names the classes before anything runs."""
    _buildfile(project, CLASS_STAGES + '''
        [targets.t.stages.vram]
        recipe = "cluster_recipes:machine"
        resources = { vram_gb = 24 }
    ''')
    plan = project.cli("plan", "--executor", "ray", "--json", env=cluster.env)
    assert plan.code == 0, plan.stderr
    planned = json.loads(plan.stdout)
    classes = planned["cluster"]["classes"]
    gpu_class = planned["stages"]["t/cuda"]["node_class"]
    assert classes[gpu_class]["fields"] == GPU_CLASS and len(classes[gpu_class]["nodes"]) == 1
    cpu_class = planned["stages"]["t/cpu"]["node_class"]
    assert classes[cpu_class]["fields"] == {"gpu": "none"} and len(classes[cpu_class]["nodes"]) == 2
    built = project.cli("build", "--json", "--executor", "ray", env=cluster.env)
    assert built.code == 0, built.stderr
    from buildsys.keys.encoding import decode
    from buildsys.store.local import LocalStore

    store = LocalStore(project.root / "store")
    ref = store.refs.read("targets", "t")["stages"]
    cuda = store.actions.get(ref["cuda"]["key"]).result
    assert decode(store.blobs.read(cuda.description))["fingerprint"] == {**GPU_CLASS}
    assert cuda.fingerprint["gpu"] == GPU_CLASS["gpu"] and cuda.producer["node_class"] == gpu_class
    assert json.loads((project.root / "out/t/cuda/machine.json").read_text())["device"] == "cuda"
    vram = store.actions.get(ref["vram"]["key"]).result
    assert vram.producer["node"] == cuda.producer["node"], "only the GPU node offers vram_gb"
    cpu = store.actions.get(ref["cpu"]["key"]).result
    assert cpu.producer["node"] != cuda.producer["node"]
    local = project.cli("build", "--json", "t", env={"RAY_ADDRESS": ""})
    assert local.code == 0, local.stderr
    # this machine has no GPU: the CPU class's results are its own too; the GPU class's are not
    assert local.summary["executed"] == 1 and local.summary["cached"] == 2, local.summary
    assert store.refs.read("targets", "t")["stages"]["cuda"]["key"] != cuda.key


@pytest.mark.slow
def test_a_stage_asking_for_what_no_node_has_fails_at_once(cluster, project: Project):
    _buildfile(project, '''
        [targets.t.stages.big]
        recipe = "cluster_recipes:machine"
        resources = { tpu_v5 = 8 }
        [targets.t.stages.fine]
        recipe = "cluster_recipes:machine"
    ''')
    started = time.monotonic()
    built = project.cli("build", "--json", "-k", "--executor", "ray", env=cluster.env)
    assert built.code == 1, built.stderr
    failure = built.summary["failures"]["t/big"]
    assert failure["status"] == "unplaceable"
    assert "targets.t.stages.big: stage t/big needs CPU 1, tpu_v5 8; no node of the cluster offers that" in failure["error"]
    assert "tpu_v5 0" in failure["error"]
    assert built.summary["executed"] == 1
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_a_stages_memory_budget_is_what_it_asks_ray_for(cluster, project: Project):
    """budget.memory_mb is Ray's ``memory`` resource: a stage asking more than any node has
    fails at once, naming the most a node offers; one that fits runs, and the node records
    that Ray reserved that memory (and its one CPU) for it, confined as a local build's is; one
    that fits Ray's reservation but outgrows its budget is killed on its node."""
    _buildfile(project, '''
        [targets.u.stages.huge]
        recipe = "cluster_recipes:machine"
        budget = { memory_mb = 100000000 }
        [targets.t.stages.fits]
        recipe = "cluster_recipes:machine"
        budget = { memory_mb = 300 }
        [targets.fat.stages.hog]
        recipe = "engine_recipes:hog"
        params = { mb = 512, hold = 30 }
        budget = { memory_mb = 200 }
        [targets.here.stages.fits]
        recipe = "cluster_recipes:machine"
        params = { where = "here" }
    ''')
    built = project.cli("build", "--json", "-k", "--executor", "ray", "u", "t", "fat", env=cluster.env)
    assert built.code == 1, built.stderr
    hog = built.summary["failures"]["fat/hog"]
    assert hog["status"] == "memory" and "memory budget" in hog["error"], hog
    failure = built.summary["failures"]["u/huge"]
    assert failure["status"] == "unplaceable", failure
    assert "stage u/huge needs CPU 1, memory 100000000 MB; no node of the cluster offers that" in failure["error"], failure
    most = int(failure["error"].rpartition("memory ")[2].split(" MB")[0])
    assert 0 < most < 100000000
    assert built.summary["executed"] == 1
    from buildsys.store.local import LocalStore

    store = LocalStore(project.root / "store")
    fits = store.actions.get(store.refs.read("targets", "t")["stages"]["fits"]["key"]).result
    assert fits.producer["reserved"] == "CPU 1, memory 300 MB", fits.producer
    assert project.cli("build", "here", env={"RAY_ADDRESS": ""}).code == 0
    here = store.actions.get(store.refs.read("targets", "here")["stages"]["fits"]["key"]).result
    assert fits.producer["confinement"] == here.producer["confinement"], (fits.producer, here.producer)
    report = project.cli("report", "t")
    assert "Ray reserved CPU 1, memory 300 MB" in report.stdout, report.stdout


@pytest.mark.slow
def test_verify_replays_each_stage_on_a_node_of_the_class_that_made_it(cluster, project: Project):
    """verify --executor ray: a stage made on the GPU class is replayed on its (only) node, one
    of the CPU class on a CPU node, each run again (a clock-reading stage diverges) rather than
    read from a node's cache; a stage recorded by a machine of a class no node is of is an error
    naming that class, never a replay on another class; --vary is this machine's and refused."""
    _buildfile(project, CLASS_STAGES + '''
        [targets.t.stages.clock]
        recipe = "nondeterministic_recipes:leak_clock"
        [targets.odd.stages.s]
        recipe = "cluster_recipes:machine"
        fingerprint = ["gpu"]
    ''')
    assert project.cli("build", "--json", "--executor", "ray", "t", env=cluster.env).code == 0
    odd = project.cli("build", "--json", "odd", env={"RAY_ADDRESS": "", "BUILDSYS_FINGERPRINT_OVERRIDE": "gpu=Imaginary GPU"})
    assert odd.code == 0, odd.stderr
    from buildsys.store.local import LocalStore

    store = LocalStore(project.root / "store")
    ref = store.refs.read("targets", "t")["stages"]
    gpu_node = store.actions.get(ref["cuda"]["key"]).result.producer["node"]
    verified = project.cli("verify", "--json", "--executor", "ray", "-j", "3", "t", "odd", env=cluster.env)
    assert verified.code == 4, verified.stdout + verified.stderr
    stages = {v["stage"]: v for v in json.loads(verified.stdout)["stages"]}
    assert stages["t/cuda"]["status"] == "reproduced" and f"replayed on node {gpu_node}" in stages["t/cuda"]["notes"], stages["t/cuda"]
    assert stages["t/cpu"]["status"] == "reproduced", stages["t/cpu"]
    cpu_node = [n for n in stages["t/cpu"]["notes"] if n.startswith("replayed on node ")]
    assert cpu_node and gpu_node not in cpu_node[0], stages["t/cpu"]
    assert stages["t/clock"]["status"] == "diverged", stages["t/clock"]
    assert stages["odd/s"]["status"] == "error", stages["odd/s"]
    assert "no node of the cluster is of the class that made it (gpu 'Imaginary GPU')" in stages["odd/s"]["error"], stages["odd/s"]
    varied = project.cli("verify", "--executor", "ray", "--vary", "tz", "t", env=cluster.env)
    assert varied.code == 2 and "--vary and --bisect run on this machine" in varied.stderr, varied.stderr


@pytest.mark.slow
def test_a_stage_over_budget_is_killed_on_its_node(cluster, project: Project):
    _buildfile(project, '''
        [targets.t.stages.slow]
        recipe = "engine_recipes:sleep"
        params = { seconds = 1200 }
        budget = { seconds = 2 }
    ''')
    started = time.monotonic()
    built = project.cli("build", "--json", "--executor", "ray", env=cluster.env)
    assert built.code == 1
    failure = built.summary["failures"]["t/slow"]
    assert failure["status"] == "timeout" and "over its time budget" in failure["error"], failure
    assert time.monotonic() - started < 600, "killed on its node, not left to sleep its 1200 s"
    record = build_records(project.root / "store")[-1]
    assert record["stages"]["t/slow"]["node"]


@pytest.mark.slow
def test_a_checkpoint_crosses_once_per_node_through_a_folder_remote(cluster, project: Project, tmp_path: Path):
    """The remote data plane (a folder remote): six stages read one 8 MB checkpoint; it
    reaches each node that ran one at most once (beside it each node gets the code tree, under
    1 MB), and the outputs come back through the remote."""
    (project.root / "ckpt").mkdir()
    (project.root / "ckpt" / "weights.bin").write_bytes(os.urandom(8 << 20))
    shared = tmp_path / "shared-remote"
    shared.mkdir()
    stages = "".join(
        f'[targets.t{i}.stages.weigh]\nrecipe = "cluster_recipes:weigh"\nmodel = "ckpt"\ninputs = {{ src = "src:in{i}.txt" }}\n'
        for i in range(6)
    )
    for i in range(6):
        project.write(f"in{i}.txt", f"input {i}\n" * (i + 1))
    _buildfile(project, f'[models.ckpt]\npath = "ckpt"\n\n[remote]\nurl = "file://{shared}"\n\n[executor]\ndata_plane = "remote"\n\n{stages}')
    built = project.cli("build", "--json", "--executor", "ray", env=cluster.env)
    assert built.code == 0, built.stderr
    moved = built.summary["cluster"]["moved"]
    nodes = {stage["node"] for stage in build_records(project.root / "store")[-1]["stages"].values()}
    assert moved["bytes_to_node"] < len(nodes) * ((8 << 20) + (1 << 20)), (moved, nodes)
    assert moved["blobs_from_node"] >= 6
    assert (shared / "cas").is_dir() and len(list((shared / "cas").rglob("*"))) >= 13
    sizes = json.loads((project.root / "out/t5/weigh/sizes.json").read_text())
    assert sizes == {"weights.bin": 8 << 20, "in5.txt": len("input 5\n" * 6)}


def test_ray_unreachable_is_one_line(project: Project):
    _buildfile(project, '''
        [targets.t.stages.s]
        recipe = "cluster_recipes:machine"
    ''')
    built = project.cli("build", "--executor", "ray", env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert built.code == 2
    assert built.stderr.strip().splitlines() == [
        "buildsys: error: Ray cluster at 127.0.0.1:9 ($RAY_ADDRESS) is unreachable: Connection refused"
    ]
    nothing = project.cli("build", "--executor", "ray", env={"RAY_ADDRESS": ""})
    assert nothing.code == 2 and "no cluster address" in nothing.stderr


@pytest.mark.slow
def test_the_client_killed_mid_build_leaves_nothing_half_ingested(cluster, project: Project):
    stages = "".join(
        f'[targets.t{i}.stages.s]\nrecipe = "cluster_recipes:started_then_sleep"\nparams = {{ seconds = {1 + i % 3} }}\n' for i in range(8)
    )
    _buildfile(project, stages)
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildsys", "build", "--json", "--executor", "ray", "-f", str(project.buildfile)],
        cwd=project.root, env={**os.environ, **cluster.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    ac = project.root / "store" / "ac"
    while time.monotonic() < deadline and not (ac.is_dir() and any(p.is_file() for p in ac.rglob("*"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    verify = project.cli("store", "verify")
    assert verify.code == 0, verify.stdout + verify.stderr
    again = project.cli("build", "--json", "--executor", "ray", env=cluster.env)
    assert again.code == 0, again.stderr
    assert again.summary["cached"] >= 1 and again.summary["executed"] + again.summary["cached"] == 8
    for i in range(8):
        assert (project.root / f"out/t{i}/s/result.txt").read_text() == f"slept {float(1 + i % 3)}\n"
    # stages that declare no fingerprint field have one key on every node: a no-op build of
    # them on the cluster never joins it, so never imports Ray
    assert _heavy_after(["build", "-f", str(project.buildfile), "--executor", "ray"], project.root, cluster.env) == "-"


@pytest.mark.slow
def test_a_node_removed_mid_stage_is_retried_elsewhere(cluster, project: Project):
    """Runs last in its module: it takes a node out of the cluster (and puts it back). The stage asks for a resource
    both workers offer; whichever starts it is killed with its raylet, and Ray runs the stage
    again on the other."""
    _buildfile(project, '''
        [targets.t.stages.s]
        recipe = "cluster_recipes:started_then_sleep"
        params = { seconds = 6 }
        resources = { worker = 1 }
    ''')
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildsys", "build", "--json", "--executor", "ray", "-f", str(project.buildfile)],
        cwd=project.root, env={**os.environ, **cluster.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        for name in ("cpu1", "gpu1"):
            if list((cluster.stores[name] / "store" / "tmp").glob("sbx-*/out/started")):
                victim = name
        time.sleep(0.05)
    assert victim is not None, "the stage never started on a worker node"
    cluster.remove(victim)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        cluster.restore(victim)  # the session's cluster, whole again for the tests after this one
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["executed"] == 1
    assert (project.root / "out/t/s/result.txt").read_text() == "slept 6.0\n"
    survivor = "gpu1" if victim == "cpu1" else "cpu1"
    record = build_records(project.root / "store")[-1]
    ran_on = record["stages"]["t/s"]["node"]
    assert list((cluster.stores[survivor] / "store" / "ac").rglob("*")), f"ran on {ran_on}, not on the surviving {survivor}"
