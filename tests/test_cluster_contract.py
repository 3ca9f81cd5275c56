"""On a cluster node as on this machine: the default project's bytes, the iterations budget,
``isolate`` and the modes (issue 17: they "hold on every node exactly as locally"). Each test
builds one project twice, on conftest's session ``cluster`` (``--executor ray``) and with the
local executor, and compares what the two made: keys, output trees, failures, record fields,
verify's verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEFAULT_STAGES, BuiltDefaultProject, Project, copy_default_project, run_cli

pytest.importorskip("ray")

from ray_cluster import build_records, compare_builds  # noqa: E402

from buildsys.store.local import LocalStore  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray-cluster")]

LOCAL = {"RAY_ADDRESS": ""}


def _twins(tmp_path: Path, body: str) -> tuple[Project, Project]:
    """The same Buildfile (stages of one thread: a node of the test cluster has one CPU) in two
    folders, one to build on the cluster and one here: the same keys, separate stores."""
    twins = []
    for where in ("ray", "local"):
        project = Project(tmp_path / where)
        project.buildfile_text(body, threads=1)
        twins.append(project)
    return twins[0], twins[1]


@pytest.fixture(scope="module")
def default_builds(cluster, built_default_project: BuiltDefaultProject, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default project (test-sized, one thread a stage: conftest) built cold on the cluster,
    beside the session's cold build of it with the local executor."""
    root = copy_default_project(tmp_path_factory.mktemp("default-ray"))
    built = run_cli("build", "--json", "--executor", "ray", cwd=root, env=cluster.env, timeout=900)
    assert built.code == 0, f"ray: {built.stderr[-3000:]}"
    for where, summary in (("ray", built.summary), ("local", built_default_project.summary)):
        assert summary["executed"] == DEFAULT_STAGES and summary["failed"] == 0, (where, summary)
    return {"ray": root, "local": built_default_project.copy(tmp_path_factory.mktemp("default-local") / "project")}


def test_the_default_project_builds_on_the_cluster_as_locally(cluster, default_builds: dict[str, Path]):
    """Every deterministic stage's output tree is the local build's, bitwise. Excluded by the
    contract: the stochastic stages (the two assets' ``sds``, score distillation), whose bytes
    may differ with the same seed; a deterministic stage downstream of one that did differ has
    another key (other inputs) and is then checked to be explained by it."""
    compared = compare_builds(default_builds["ray"], default_builds["local"])
    assert compared.stages == 24 and sorted(compared.stochastic) == ["blue-torus/sds", "red-cube/sds"], compared
    assert compared.differing == [] and compared.unexplained == [], compared
    if all(compared.stochastic.values()):  # no stochastic stage made other bytes: every deterministic one has its local key
        assert len(compared.compared) == 22, compared
    assert {"tiny-prior/train", "bunny/export", "bunny/usd"} <= set(compared.compared), compared
    # the outputs a user sees, file by file, where their stages were compared
    out = {w: default_builds[w] / "out" for w in ("ray", "local")}
    shown = [sid for sid in compared.compared if (out["local"] / sid).is_dir()]
    assert len(shown) >= 4, shown
    for sid in shown:
        files = sorted(p.relative_to(out["local"]) for p in (out["local"] / sid).rglob("*") if p.is_file())
        assert files and all((out["ray"] / f).read_bytes() == (out["local"] / f).read_bytes() for f in files), sid
    # records and report name the node of each stage; the nodes' stores hold what they ran
    record = build_records(default_builds["ray"] / "store")[-1]
    nodes = {sid: stage.get("node") for sid, stage in record["stages"].items()}
    assert len(nodes) == 24 and all(nodes.values()), nodes
    assert record["summary"]["cluster"]["classes"] and record["summary"]["cluster"]["moved"]["bytes_to_node"] > 0
    report = run_cli("report", "bunny", cwd=default_builds["ray"])
    assert report.code == 0 and report.stdout.count(" on node ") == 6, report.stdout
    assert [name for name, store in cluster.stores.items() if list((store / "store" / "ac").rglob("*"))]


def test_the_iterations_budget_holds_on_a_node_as_locally(cluster, tmp_path: Path):
    """``budget.iterations`` reaches the recipe on its node (``ctx.max_iterations``) as here: a
    stage that needs more fails the same way (status, error, exit code), one within it records
    the same iterations and bytes under the same key."""
    ray, local = _twins(tmp_path, '''
        [targets.over.stages.s]
        recipe = "cluster_recipes:iterate"
        params = { n = 8 }
        budget = { iterations = 5 }
        [targets.within.stages.s]
        recipe = "cluster_recipes:iterate"
        params = { n = 3 }
        budget = { iterations = 5 }
    ''')
    built = {"ray": ray.cli("build", "--json", "-k", "--executor", "ray", env=cluster.env), "local": local.cli("build", "--json", "-k", env=LOCAL)}
    for done in built.values():
        assert done.code == 1, done.stderr
    failures = {w: {sid: (f["status"], f["error"]) for sid, f in done.summary["failures"].items()} for w, done in built.items()}
    assert failures["ray"] == failures["local"], failures
    assert failures["ray"]["over/s"] == ("failed", "failed: BudgetExceeded: stage 's': needs 8 iterations, over budget.iterations=5"), failures
    results = {}
    for where, project in (("ray", ray), ("local", local)):
        store = LocalStore(project.root / "store")
        entry = store.refs.read("targets", "within")["stages"]["s"]
        results[where] = (entry["key"], entry["tree"], store.actions.get(entry["key"]).result.metrics["iterations"])
    assert results["ray"] == results["local"] and results["ray"][2] == 3, results


def test_isolated_stages_get_a_fresh_worker_on_their_node_as_locally(cluster, tmp_path: Path):
    """``isolate = true`` on a node: a fresh buildsys worker for the stage, as here. A chain of
    five stages on the one node offering ``vram_gb`` (one CPU: one stage at a time), each writing
    how many jobs its worker process ran: the first three share a worker and count 1, 2, 3, the
    last two are isolated and say 1, and both builds say exactly that."""
    chain = '[targets.t]\noutputs = ["s0", "s1", "s2", "s3", "s4"]\n' + "".join(
        f'[targets.t.stages.s{i}]\nrecipe = "cluster_recipes:count_jobs"\nisolate = {"true" if i >= 3 else "false"}\n'
        f'resources = {{ vram_gb = 1 }}\nparams = {{ salt = "{tmp_path.name}" }}\n'
        + (f'inputs = {{ after = "s{i - 1}" }}\n' if i else "")
        for i in range(5)
    )
    ray, local = _twins(tmp_path, chain)
    assert ray.cli("build", "--json", "--executor", "ray", env=cluster.env).code == 0
    assert local.cli("build", "--json", "-j", "1", env=LOCAL).code == 0
    counts = {w: [json.loads((p.root / f"out/t/s{i}/jobs.json").read_text())["jobs_in_this_worker"] for i in range(5)]
              for w, p in (("ray", ray), ("local", local))}
    assert counts["ray"] == counts["local"] == [1, 2, 3, 1, 1], counts
    nodes = {stage["node"] for stage in build_records(ray.root / "store")[-1]["stages"].values()}
    assert len(nodes) == 1, nodes


def test_the_modes_hold_on_a_node_as_locally(cluster, tmp_path: Path):
    """deterministic, strict and stochastic on a node: the same worker settings (torch's
    switches, the environment each mode sets), the same seeded draw, the same fields in the
    action record, and verify's verdicts on a stage that reads the clock the same: diverged for
    the two deterministic modes, a warning for the stochastic one."""
    modes = ("deterministic", "strict", "stochastic")
    ray, local = _twins(tmp_path, "".join(f'[targets.{m}.stages.s]\nrecipe = "cluster_recipes:contract"\nmode = "{m}"\n' for m in modes))
    assert ray.cli("build", "--json", "--executor", "ray", env=cluster.env).code == 0
    assert local.cli("build", "--json", env=LOCAL).code == 0
    for mode in modes:
        facts = {w: json.loads((p.root / f"out/{mode}/s/contract.json").read_text()) for w, p in (("ray", ray), ("local", local))}
        assert facts["ray"] == facts["local"], (mode, facts)
        assert facts["ray"]["deterministic_algorithms"] == (mode != "stochastic") and facts["ray"]["mkldnn"] == (mode != "strict")
        assert (facts["ray"]["env"]["MKL_CBWR"] == "COMPATIBLE") == (mode == "strict")
        records = {}
        for where, project in (("ray", ray), ("local", local)):
            store = LocalStore(project.root / "store")
            records[where] = store.actions.get(store.refs.read("targets", mode)["stages"]["s"]["key"]).result
        assert records["ray"].key == records["local"].key and records["ray"].description == records["local"].description
        made = {w: r.producer for w, r in records.items()}
        assert {"executor", "node", "reserved"} <= set(made["ray"]) - set(made["local"]) <= {"executor", "node", "node_class", "reserved"}, made
        assert set(made["local"]) <= set(made["ray"]) and made["ray"]["confinement"] == made["local"]["confinement"], made
        assert set(records["ray"].metrics) == set(records["local"].metrics), records
        assert set(records["ray"].fingerprint) == set(records["local"].fingerprint), records  # the node's values, the same fields
    verdicts = {}
    for where, project, env in (("ray", ray, cluster.env), ("local", local, LOCAL)):
        verified = project.cli("verify", "--json", *(["--executor", "ray"] if where == "ray" else []), *modes, env=env)
        assert verified.code == 4, verified.stdout + verified.stderr
        verdicts[where] = {v["stage"]: v["status"] for v in json.loads(verified.stdout)["stages"]}
    assert verdicts["ray"] == verdicts["local"] == {"deterministic/s": "diverged", "strict/s": "diverged", "stochastic/s": "warning"}, verdicts
