"""Ed25519 signing of action results, key files, rotation, and the keys/remote CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from buildsys.cli.remote import keys, remote
from buildsys.remote.signing import (
    Signer,
    SigningError,
    TrustedKeys,
    Verdict,
    generate_key,
)
from buildsys.store.records import ActionRecord, ActionResult
from tests.remote_servers import NginxServer, nginx  # noqa: F401

RESULT = ActionResult(key="1" * 64, description="2" * 64, tree="3" * 64, log=None, metrics={"wall_s": 2.0})


def test_generate_writes_private_0600_and_returns_public(tmp_path: Path) -> None:
    line = generate_key("ci-2025", tmp_path / "keys")
    name, _, pub = line.partition(":")
    assert name == "ci-2025" and len(pub) == 44
    private = tmp_path / "keys" / "ci-2025.key"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert (tmp_path / "keys" / "ci-2025.pub").read_text().strip() == line
    assert Signer.load("ci-2025", tmp_path / "keys").public_line() == line
    with pytest.raises(SigningError, match="already exists"):
        generate_key("ci-2025", tmp_path / "keys")
    with pytest.raises(SigningError, match="not a key name"):
        generate_key("../evil", tmp_path / "keys")


def test_verdicts_and_rotation(tmp_path: Path) -> None:
    old_line = generate_key("ci-2024", tmp_path)
    new_line = generate_key("ci-2025", tmp_path)
    old, new = Signer.load("ci-2024", tmp_path), Signer.load("ci-2025", tmp_path)
    both = TrustedKeys.from_mapping(dict(line.split(":", 1) for line in (old_line, new_line)))
    rotated = TrustedKeys.from_mapping(dict([new_line.split(":", 1)]))
    by_old, by_new = ActionRecord(RESULT, old.sign(RESULT)), ActionRecord(RESULT, new.sign(RESULT))
    assert both.verify(by_old) is Verdict.OK and both.verify(by_new) is Verdict.OK
    assert rotated.verify(by_old) is Verdict.UNTRUSTED and rotated.verify(by_new) is Verdict.OK
    assert both.verify(ActionRecord(RESULT, None)) is Verdict.UNSIGNED
    other = ActionResult(**{**RESULT.__dict__, "metrics": {"wall_s": 3.0}})
    assert both.verify(ActionRecord(other, new.sign(RESULT))) is Verdict.BAD_SIGNATURE
    # a signature by one key presented under another trusted key's name
    assert both.verify(ActionRecord(RESULT, {"key": "ci-2024", "sig": by_new.signature["sig"]})) is Verdict.BAD_SIGNATURE
    for junk in ({"key": 7}, {"key": "ci-2025"}, {"key": "ci-2025", "sig": "%%%"}, {"key": "ci-2025", "sig": "AAAA"}):
        assert both.verify(ActionRecord(RESULT, junk)) is Verdict.BAD_SIGNATURE


def test_loading_refuses_bad_key_files(tmp_path: Path) -> None:
    generate_key("k", tmp_path)
    os.chmod(tmp_path / "k.key", 0o644)
    with pytest.raises(SigningError, match="readable by others"):
        Signer.load("k", tmp_path)
    with pytest.raises(SigningError, match="not found"):
        Signer.load("absent", tmp_path)
    fd = os.open(tmp_path / "bad.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"bad:not-a-key\n")
    os.close(fd)
    with pytest.raises(SigningError, match="not an Ed25519 private key"):
        Signer.load("bad", tmp_path)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BUILDSYS_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("BUILDSYS_KEYS_DIR", str(tmp_path / "keys"))
    (tmp_path / "config.toml").write_text("")
    return tmp_path


def test_cli_keys_generate_and_list(env: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(keys, ["generate", "alice-1"])
    assert out.exit_code == 0, out.output
    line = out.stdout.strip().splitlines()[0]
    assert line.startswith("alice-1:")
    name, pub = line.split(":", 1)
    (env / "config.toml").write_text(f'[signing]\nkey = "alice-1"\n[trust]\nkeys = {{ bob = "{pub}" }}\n')
    listed = runner.invoke(keys, ["list"])
    assert listed.exit_code == 0 and f"* {line}" in listed.output and "trusted keys" in listed.output
    again = runner.invoke(keys, ["generate", "alice-1"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_cli_remote_status(env: Path, nginx: NginxServer) -> None:
    runner = CliRunner()
    (env / "share").mkdir()
    ok = runner.invoke(remote, ["status", "--remote", f"file://{env / 'share'}"])
    assert ok.exit_code == 0 and "reachable" in ok.output and "trusted keys: 0" in ok.output
    buildfile = env / "Buildfile.toml"
    buildfile.write_text(f'[remote]\nurl = "{nginx.url}/cache"\nparallel = 3\n[targets.t.stages.s]\nrecipe = "recipes.files:copy"\n')
    as_json = runner.invoke(remote, ["status", "-f", str(buildfile), "--json"])
    report = json.loads(as_json.output)
    assert as_json.exit_code == 0 and report["reachable"] and report["parallel"] == 3
    assert report["url_from"] == f"{buildfile} [remote]" and report["latency_ms"] >= 0
    nginx.stop()
    down = runner.invoke(remote, ["status", "-f", str(buildfile), "--json"])
    assert down.exit_code == 1 and json.loads(down.output)["reachable"] is False
    none = runner.invoke(remote, ["status", "--remote", ""])
    assert none.exit_code == 0 and "none configured" in none.output
    (env / "config.toml").write_text("[remote]\nretries = -1\n")
    bad = runner.invoke(remote, ["status"])
    assert bad.exit_code == 2 and "field 'retries'" in bad.output
