"""Two machines, one cache: machine A builds the default targets and pushes; machine B (an empty
store in another directory, another process) builds the same Buildfile and executes nothing,
with bitwise-identical artifacts. For each backend: shared folder, nginx WebDAV, S3 (moto).
And at the build level: a remote that is down or slow, or that holds unsigned records, never
fails a build that can run locally."""

from __future__ import annotations

import filecmp
import os
import time
from pathlib import Path

import pytest
from conftest import DEFAULT_STAGES, REPO, BuiltDefaultProject, CliResult, copy_default_project, run_cli

from buildsys.remote.signing import generate_key
from tests.remote_servers import (  # noqa: F401
    MotoServer,
    NginxServer,
    SlowServer,
    free_port,
    moto_session,
    nginx_binary,
)


def _machine(root: Path) -> Path:
    """A checkout of the (test-sized) default project on another machine."""
    return copy_default_project(root)


def _config(path: Path, keys: Path, trusted: str, signing: str | None) -> dict[str, str]:
    name, _, pub = trusted.partition(":")
    text = f'[trust]\nkeys = {{ {name} = "{pub}" }}\n'
    if signing:
        text = f'[signing]\nkey = "{signing}"\n' + text
    path.write_text(text)
    return {"BUILDSYS_CONFIG": str(path), "BUILDSYS_KEYS_DIR": str(keys)}


def _build(root: Path, env: dict[str, str], *args: str) -> CliResult:
    result = run_cli("build", "--json", "-f", str(root / "Buildfile.toml"), *args, cwd=root, env=env)
    assert result.code == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, moto_session: MotoServer, built_default_project: BuiltDefaultProject):
    """Machine A after building the default targets (the session's cold build: conftest) and
    pushing them to the shared folder (the others are pushed to by their tests). That a build
    pushes each action it executes is tested on small projects below."""
    if nginx_binary() is None:
        pytest.skip("nginx binary not found (Debian: apt-get install nginx)")
    base = tmp_path_factory.mktemp("farm")
    keys = base / "keys"
    public = generate_key("farm-a", keys)
    env_a = _config(base / "a.toml", keys, public, signing="farm-a")
    env_b = _config(base / "b.toml", base / "no-keys", public, signing=None)
    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    bucket = f"farm{time.monotonic_ns()}"
    moto_session.client().create_bucket(Bucket=bucket)
    (base / "shared-cache").mkdir()
    nginx = NginxServer(base / "nginx").start()
    remotes = {
        "file": f"file://{base / 'shared-cache'}",
        "http": f"{nginx.url}/cache",
        "s3": f"s3://{bucket}/buildsys",
    }
    env_a.update(aws)
    env_b.update(aws)
    machine_a = built_default_project.copy(base / "a")
    first = run_cli("remote", "push", "-f", str(machine_a / "Buildfile.toml"), "--remote", remotes["file"], cwd=machine_a, env=env_a)
    assert first.code == 0, first.stderr
    assert f"pushed {DEFAULT_STAGES} of {DEFAULT_STAGES} actions" in first.stdout, first.stdout
    try:
        yield base, machine_a, remotes, env_a, env_b, moto_session, nginx
    finally:
        nginx.stop()


@pytest.mark.parametrize("backend", ["file", "http", "s3"])
def test_second_machine_executes_nothing(farm, backend):
    base, machine_a, remotes, env_a, env_b, moto, _ = farm
    url = remotes[backend]
    if backend != "file":
        env_a = {**env_a, "BUILDSYS_CONFIG": _with_endpoint(base, env_a["BUILDSYS_CONFIG"], backend, moto)}
        push = run_cli("remote", "push", "-f", str(machine_a / "Buildfile.toml"), "--remote", url, cwd=machine_a, env=env_a)
        assert push.code == 0, push.stderr + push.stdout
    env_b = {**env_b, "BUILDSYS_CONFIG": _with_endpoint(base, env_b["BUILDSYS_CONFIG"], backend, moto)}
    machine_b = _machine(base / f"b-{backend}")
    result = _build(machine_b, env_b, "--remote", url)
    assert result.summary["executed"] == 0
    assert result.summary["pulled"] == DEFAULT_STAGES
    assert result.summary["remote"]["ignored_unsigned"] == 0
    comparison = filecmp.dircmp(machine_a / "out", machine_b / "out")
    _assert_same_tree(comparison)
    assert run_cli("store", "verify", "-f", str(machine_b / "Buildfile.toml"), cwd=machine_b).code == 0


def _with_endpoint(base: Path, config: str, backend: str, moto: MotoServer) -> str:
    """The S3 endpoint of the moto server goes in the user config's [remote] table."""
    text = Path(config).read_text()
    if backend == "s3":
        text = f'[remote]\ns3_endpoint_url = "{moto.url}"\ns3_region = "us-east-1"\n' + text
    out = base / f"{Path(config).stem}-{backend}.toml"
    out.write_text(text)
    return str(out)


def _assert_same_tree(comparison: filecmp.dircmp) -> None:
    assert not comparison.left_only and not comparison.right_only, (comparison.left_only, comparison.right_only)
    _, mismatch, errors = filecmp.cmpfiles(comparison.left, comparison.right, comparison.common_files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for sub in comparison.subdirs.values():
        _assert_same_tree(sub)


SMALL = """
[project]
recipe_path = ["{repo}"]
jobs = 1
[targets.t.stages.copy]
recipe = "recipes.files:copy"
inputs = {{ src = "src:data.txt" }}
"""


def _small(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "data.txt").write_text("payload")
    (root / "Buildfile.toml").write_text(SMALL.format(repo=REPO))
    return root


def test_workstations_without_the_farm_key_cannot_disable_the_shared_cache(tmp_path):
    """The bug: an unconfigured workstation (no signing key, the default), or one signing with
    its own key, built the same actions and overwrote the farm's signed records; a fresh machine
    trusting the farm then rebuilt everything. Now the first pushes nothing and says how to set
    a key up, the second pushes into its own key's place, and the fresh machine pulls."""
    farm_public = generate_key("farm", tmp_path / "farm-keys")
    alice_public = generate_key("alice", tmp_path / "alice-keys")
    (tmp_path / "cache").mkdir()
    cache = f"file://{tmp_path / 'cache'}"
    farm = _config(tmp_path / "farm.toml", tmp_path / "farm-keys", farm_public, signing="farm")
    (tmp_path / "nothing.toml").write_text("")
    unconfigured = {"BUILDSYS_CONFIG": str(tmp_path / "nothing.toml"), "BUILDSYS_KEYS_DIR": str(tmp_path / "no-keys")}
    alice = _config(tmp_path / "alice.toml", tmp_path / "alice-keys", alice_public, signing="alice")
    fresh = _config(tmp_path / "fresh.toml", tmp_path / "no-keys", farm_public, signing=None)
    text = SMALL.format(repo=REPO) + '[targets.t.stages.again]\nrecipe = "recipes.files:copy"\ninputs = { prev = "copy" }\n'
    for name in ("farm", "ws", "alice", "fresh"):
        (_small(tmp_path / name) / "Buildfile.toml").write_text(text)
    assert _build(tmp_path / "farm", farm, "--remote", cache).summary["remote"]["pushed_actions"] == 2
    ws = _build(tmp_path / "ws", unconfigured, "--remote", cache)
    assert ws.summary["executed"] == 2 and ws.summary["remote"]["pushed_actions"] == 0
    advice = ws.summary["remote"]["advice"]
    assert any(a.startswith("2 results not pushed: no signing key. Make one with `buildsys keys generate NAME`") for a in advice)
    assert any(a.startswith("no trusted keys") for a in advice)
    mine = _build(tmp_path / "alice", alice, "--remote", cache)
    assert mine.summary["executed"] == 2 and mine.summary["remote"]["pushed_actions"] == 2
    pulled = _build(tmp_path / "fresh", fresh, "--remote", cache)
    assert pulled.summary["executed"] == 0 and pulled.summary["pulled"] == 2
    assert pulled.summary["remote"]["refused"] == 0 and pulled.summary["remote"]["advice"] == []


def test_a_build_summary_says_why_remote_records_were_refused_and_what_to_do(tmp_path):
    """Records in the farm's place that the farm did not sign: counted, explained, never used."""
    from buildsys.keys.encoding import canonical_bytes, decode

    farm_public = generate_key("farm", tmp_path / "farm-keys")
    (tmp_path / "cache").mkdir()
    cache = f"file://{tmp_path / 'cache'}"
    farm = _config(tmp_path / "farm.toml", tmp_path / "farm-keys", farm_public, signing="farm")
    fresh = _config(tmp_path / "fresh.toml", tmp_path / "no-keys", farm_public, signing=None)
    _build(_small(tmp_path / "farm"), farm, "--remote", cache)
    (record,) = (tmp_path / "cache" / "ac").glob("*/*")
    os.chmod(record, 0o644)
    raw = decode(record.read_bytes())
    record.write_bytes(canonical_bytes({"result": raw["result"], "signature": None}))
    root = _small(tmp_path / "fresh")
    result = run_cli("build", "-f", str(root / "Buildfile.toml"), "--remote", cache, cwd=root, env=fresh)
    assert result.code == 0, result.stderr
    assert "1 executed" in result.stderr and "1 remote entries refused (why below)" in result.stderr
    assert "buildsys: remote: 1 records refused: in the place of a trusted key but not signed by it (1 unsigned" in result.stderr


@pytest.mark.parametrize("fault", ["down", "slow", "trickling"])
def test_unusable_remote_never_fails_a_local_build(tmp_path, fault):
    """Down, answering after 30 s, or answering a byte a second: the first pull gives up
    within two tries of the stall rule (1-2 s each at timeout_s = 0.5), the remote is disabled,
    and the build goes on locally."""
    if fault == "down":
        url = f"http://127.0.0.1:{free_port()}/cache"
        server = None
    else:
        server = SlowServer(delay_s=30.0 if fault == "slow" else 1.0, trickle=fault == "trickling").start()
        url = f"{server.url}/cache"
    env = _config(tmp_path / "config.toml", tmp_path / "k", generate_key("me", tmp_path / "k"), signing="me")
    (tmp_path / "config.toml").write_text("[remote]\ntimeout_s = 0.5\nretries = 1\n" + (tmp_path / "config.toml").read_text())
    try:
        root = _small(tmp_path / "p")
        result = _build(root, env, "--remote", url)
    finally:
        if server is not None:
            server.stop()
    assert result.summary["executed"] == 1 and result.summary["wall_s"] < 10
    reason = result.summary["remote"]["disabled_reason"]
    assert ("connection refused" if fault == "down" else "timed out") in reason
    assert f"remote {url} disabled for the rest of this run" in result.stderr
    assert (root / "out/t/copy/src/data.txt").read_text() == "payload"


def _signer_and_reader(tmp_path: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """(env of a machine that signs what it pushes, env of one that only trusts it, a shared
    folder cache URL)."""
    public = generate_key("studio", tmp_path / "keys")
    env_a = _config(tmp_path / "a.toml", tmp_path / "keys", public, signing="studio")
    env_b = _config(tmp_path / "b.toml", tmp_path / "none", public, signing=None)
    (tmp_path / "cache").mkdir()
    return env_a, env_b, f"file://{tmp_path / 'cache'}"


def test_hits_across_machines_need_the_declared_fingerprint_fields(tmp_path):
    env_a, env_b, cache = _signer_and_reader(tmp_path)
    text = SMALL.format(repo=REPO) + 'fingerprint = ["torch"]\n'
    for name in ("a", "b", "c"):
        root = _small(tmp_path / name)
        (root / "Buildfile.toml").write_text(text)
    assert _build(tmp_path / "a", env_a, "--remote", cache).summary["remote"]["pushed_actions"] == 1
    other_torch = _build(tmp_path / "b", {**env_b, "BUILDSYS_FINGERPRINT_OVERRIDE": "torch=9.9.9"}, "--remote", cache)
    assert other_torch.summary["pulled"] == 0 and other_torch.summary["executed"] == 1
    same_torch = _build(tmp_path / "c", env_b, "--remote", cache)
    assert same_torch.summary["pulled"] == 1 and same_torch.summary["executed"] == 0


def test_remote_pull_prefetches_a_closure_for_offline_work(tmp_path):
    env_a, env_b, cache = _signer_and_reader(tmp_path)
    text = SMALL.format(repo=REPO) + '[targets.t.stages.again]\nrecipe = "recipes.files:copy"\ninputs = { prev = "copy" }\n'
    for name in ("a", "b"):
        (_small(tmp_path / name) / "Buildfile.toml").write_text(text)
    assert _build(tmp_path / "a", env_a, "--remote", cache).summary["remote"]["pushed_actions"] == 2
    b = tmp_path / "b"
    pulled = run_cli("remote", "pull", "-f", str(b / "Buildfile.toml"), "--remote", cache, cwd=b, env=env_b)
    assert pulled.code == 0, pulled.stderr
    assert "pulled 2 stages" in pulled.stdout
    offline = _build(b, env_b, "--no-remote")
    assert offline.summary["executed"] == 0 and offline.summary["cached"] == 2
    assert (b / "out/t/again/prev/src/data.txt").read_text() == "payload"
