"""The remote and key commands through the real CLI (``python -m buildsys``): ``keys generate|list``,
``remote status`` against real servers (a folder, nginx, moto's S3), ``remote push`` counts and
refusals, a remote whose credentials are missing from the environment, and ``store cat``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import REPO, CliResult, run_cli

from tests.remote_servers import NGINX_PASSWORD, NGINX_USER, MotoServer, NginxServer, aws_env, moto_session, nginx  # noqa: F401

SMALL = f"""
[project]
recipe_path = ["{REPO}"]
jobs = 1
[targets.t.stages.copy]
recipe = "recipes.files:copy"
inputs = {{ src = "src:data.txt" }}
[targets.t.stages.again]
recipe = "recipes.files:copy"
inputs = {{ prev = "copy" }}
"""


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An isolated user config and keys dir, and a small project in ``tmp_path / "p"``."""
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "data.txt").write_text("payload")
    (tmp_path / "p" / "Buildfile.toml").write_text(SMALL)
    return {"BUILDSYS_CONFIG": str(tmp_path / "config.toml"), "BUILDSYS_KEYS_DIR": str(tmp_path / "keys")}


def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(*args, cwd=tmp_path / "p", env=env)


def _one_error_line(result: CliResult, code: int, *fragments: str) -> None:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("buildsys: error:") and len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_keys_generate_and_list(tmp_path: Path, home: dict[str, str]) -> None:
    made = _cli(tmp_path, home, "keys", "generate", "farm-2026")
    assert made.code == 0, made.stderr
    line = made.stdout.strip()
    name, _, public = line.partition(":")
    assert name == "farm-2026" and len(public) == 44
    assert '[signing] key = "farm-2026"' in made.stderr and f'farm-2026 = "{public}"' in made.stderr
    private = tmp_path / "keys" / "farm-2026.key"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600 and public not in private.read_text()
    _one_error_line(_cli(tmp_path, home, "keys", "generate", "farm-2026"), 2, "already exists")
    _one_error_line(_cli(tmp_path, home, "keys", "generate", "../evil"), 2, "'../evil' is not a key name")
    assert not (tmp_path / "evil.key").exists()
    (tmp_path / "config.toml").write_text(f'[signing]\nkey = "farm-2026"\n[trust]\nkeys = {{ ci = "{public}" }}\n')
    listed = _cli(tmp_path, home, "keys", "list")
    assert listed.code == 0, listed.stderr
    assert f"* {line}" in listed.stdout and "1 private key(s)" in listed.stdout
    assert f"trusted keys ({tmp_path / 'config.toml'}): 1" in listed.stdout and f"ci:{public}" in listed.stdout
    (tmp_path / "config.toml").write_text("[trust]\nkeys = { ci = 'short' }\n")
    _one_error_line(_cli(tmp_path, home, "keys", "list"), 2, "config.toml", "keys.ci", "not a base64 Ed25519 public key")


def test_remote_status_of_a_folder_and_nginx(tmp_path: Path, home: dict[str, str], nginx: NginxServer) -> None:
    (tmp_path / "share").mkdir()
    ok = _cli(tmp_path, home, "remote", "status", "--remote", f"file://{tmp_path / 'share'}")
    assert ok.code == 0, ok.stderr
    assert "status:       reachable" in ok.stdout and "signing key:  none: nothing is pushed (buildsys keys generate NAME" in ok.stdout
    assert "trusted keys: none: no record on the remote is used" in ok.stdout
    missing = _cli(tmp_path, home, "remote", "status", "--remote", f"file://{tmp_path / 'unmounted'}")
    assert missing.code == 1 and "UNUSABLE" in missing.stdout and "does not exist" in missing.stdout
    buildfile = tmp_path / "p" / "Buildfile.toml"
    buildfile.write_text(f'[remote]\nurl = "{nginx.url}/cache"\nparallel = 3\n' + SMALL)
    as_json = _cli(tmp_path, home, "remote", "status", "--json")
    report = json.loads(as_json.stdout)
    assert as_json.code == 0 and report["reachable"] and report["parallel"] == 3 and report["latency_ms"] >= 0
    assert report["url_from"] == "Buildfile.toml [remote]" and report["signing_key"] is None and report["trusted_keys"] == []
    nginx.stop()
    down = _cli(tmp_path, home, "remote", "status", "--json")
    assert down.code == 1 and json.loads(down.stdout)["reachable"] is False
    assert "connection refused" in json.loads(down.stdout)["error"]
    none = _cli(tmp_path, home, "remote", "status", "--remote", "")
    assert none.code == 0 and "none configured" in none.stdout
    (tmp_path / "config.toml").write_text("[remote]\nretries = -1\n")
    _one_error_line(_cli(tmp_path, home, "remote", "status"), 2, "config.toml", "field 'retries'")


def test_remote_status_calls_a_missing_bucket_unusable(tmp_path: Path, home: dict[str, str], moto_session: MotoServer, monkeypatch) -> None:
    aws_env(monkeypatch)
    moto_session.client().create_bucket(Bucket="present")
    (tmp_path / "config.toml").write_text(f'[remote]\ns3_endpoint_url = "{moto_session.url}"\ns3_region = "us-east-1"\n')
    env = {**home, **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}}
    there = _cli(tmp_path, env, "remote", "status", "--remote", "s3://present/cache")
    assert there.code == 0 and "reachable" in there.stdout, there.stdout + there.stderr
    gone = _cli(tmp_path, env, "remote", "status", "--remote", "s3://no-such-bucket/cache")
    assert gone.code == 1, gone.stdout
    assert "UNUSABLE" in gone.stdout and "no-such-bucket" in gone.stdout and "does not exist" in gone.stdout


def test_credentials_missing_from_the_environment_skip_the_remote(tmp_path: Path, home: dict[str, str], nginx: NginxServer) -> None:
    """An unset password_env stopped every build (exit 2); the remote is now skipped with a
    warning and the build goes on locally. ``remote status`` says what is missing (exit 1)."""
    (tmp_path / "config.toml").write_text(f'[remote]\nurl = "{nginx.url}/auth"\nusername = "{NGINX_USER}"\npassword_env = "BUILDSYS_TEST_CACHE_PW"\n')
    env = {k: v for k, v in os.environ.items() if k != "BUILDSYS_TEST_CACHE_PW"} | home
    built = run_cli("build", "--json", cwd=tmp_path / "p", env=env)
    assert built.code == 0, built.stderr
    assert built.summary["executed"] == 2 and built.summary["remote"] is None
    assert "buildsys: warning: remote" in built.stderr and "skipped" in built.stderr and "BUILDSYS_TEST_CACHE_PW is not set" in built.stderr
    status = run_cli("remote", "status", cwd=tmp_path / "p", env=env)
    assert status.code == 1 and "UNUSABLE" in status.stdout and "BUILDSYS_TEST_CACHE_PW is not set" in status.stdout
    _one_error_line(run_cli("remote", "push", cwd=tmp_path / "p", env=env), 2, "BUILDSYS_TEST_CACHE_PW is not set")
    with_password = run_cli("remote", "status", cwd=tmp_path / "p", env={**env, "BUILDSYS_TEST_CACHE_PW": NGINX_PASSWORD})
    assert with_password.code == 0 and "reachable" in with_password.stdout


def test_remote_push_prints_counts_and_says_when_a_remote_is_read_only(tmp_path: Path, home: dict[str, str], nginx: NginxServer) -> None:
    assert _cli(tmp_path, home, "build", "--no-remote").code == 0
    _one_error_line(_cli(tmp_path, home, "remote", "push", "--remote", f"{nginx.url}/cache"), 2,
                    "no signing key", "buildsys keys generate NAME", str(tmp_path / "config.toml"))
    assert _cli(tmp_path, home, "keys", "generate", "me").code == 0
    (tmp_path / "config.toml").write_text('[signing]\nkey = "me"\n')
    pushed = _cli(tmp_path, home, "remote", "push", "--remote", f"{nginx.url}/cache")
    assert pushed.code == 0, pushed.stderr
    assert pushed.stdout.strip() == f"pushed 2 of 2 actions to {nginx.url}/cache (0 not in the local store, 0 failed)"
    refused = _cli(tmp_path, home, "remote", "push", "--remote", f"{nginx.url}/readonly")
    assert refused.code == 1
    assert "pushed 0 of 2 actions" in refused.stdout and "refuses uploads from this client (read-only for it)" in refused.stderr
    assert "HTTP 403" in refused.stderr
    (tmp_path / "config.toml").write_text('[signing]\nkey = "me"\n[remote]\nread_only = true\n')
    _one_error_line(_cli(tmp_path, home, "remote", "push", "--remote", f"{nginx.url}/cache"), 2,
                    "is read-only here (read_only = true, from", "config.toml [remote]", "nothing pushed")


def test_remote_push_of_a_target_never_built_is_one_line_exit_2(tmp_path: Path, home: dict[str, str]) -> None:
    """It was click's own 'Error:' line and exit 1, as if a build had failed."""
    (tmp_path / "share").mkdir()
    _one_error_line(_cli(tmp_path, home, "remote", "push", "t", "--remote", f"file://{tmp_path / 'share'}"), 2,
                    "target 't' has not been built here yet")


def test_store_cat(tmp_path: Path, home: dict[str, str]) -> None:
    built = run_cli("build", "--json", "--no-remote", cwd=tmp_path / "p", env=home)
    assert built.code == 0, built.stderr
    listed = _cli(tmp_path, home, "store", "ls", "refs")
    assert listed.code == 0 and listed.stdout.strip()
    ref = json.loads(_cli(tmp_path, home, "store", "cat", "targets/t").stdout)
    stage = ref["stages"]["copy"]
    record = json.loads(_cli(tmp_path, home, "store", "cat", stage["key"]).stdout)
    assert record["result"]["key"] == stage["key"] and record["result"]["tree"] == stage["tree"]
    tree = json.loads(_cli(tmp_path, home, "store", "cat", stage["tree"]).stdout)
    assert list(tree) == ["src/data.txt"]
    blob = run_cli("store", "cat", tree["src/data.txt"][0], cwd=tmp_path / "p", env=home)
    assert blob.code == 0 and blob.stdout == "payload"
    _one_error_line(_cli(tmp_path, home, "store", "cat", "not-a-digest"), 2, "'not-a-digest' is neither a digest nor a ref")
    _one_error_line(_cli(tmp_path, home, "store", "cat", "0" * 64), 2, f"no blob or action record {'0' * 64}")
    _one_error_line(_cli(tmp_path, home, "store", "cat", "targets/nothing"), 2, "no ref targets/nothing")
