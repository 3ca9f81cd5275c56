"""Ed25519 signing of action results, key files and rotation (the commands: test_remote_cli.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from buildsys.remote.signing import (
    Signer,
    SigningError,
    TrustedKeys,
    Verdict,
    generate_key,
)
from buildsys.store.records import ActionRecord, ActionResult

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
    # decodable but with no canonical bytes (found by bench/fuzz_inputs.py: it raised EncodingError in a pull)
    deep: dict = {}
    for _ in range(2000):
        deep = {"k": deep}
    for odd in ({"wall_s": float("inf")}, {b"bytes key": 1}, deep):  # deep: a RecursionError in a pull before
        unencodable = ActionResult(**{**RESULT.__dict__, "metrics": odd})
        assert both.verify(ActionRecord(unencodable, by_new.signature)) is Verdict.BAD_SIGNATURE
        assert both.verify_in_place(ActionRecord(unencodable, by_new.signature), new.key_id) is Verdict.BAD_SIGNATURE


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


def test_records_are_checked_against_the_key_of_the_place_they_are_in(tmp_path: Path) -> None:
    old_line, new_line = generate_key("ci-2024", tmp_path), generate_key("ci-2025", tmp_path)
    old, new = Signer.load("ci-2024", tmp_path), Signer.load("ci-2025", tmp_path)
    both = TrustedKeys.from_mapping(dict(line.split(":", 1) for line in (old_line, new_line)))
    assert len({old.key_id, new.key_id}) == 2 and all(len(k) == 32 and int(k, 16) >= 0 for k in (old.key_id, new.key_id))
    assert both.ids() == {old.key_id: "ci-2024", new.key_id: "ci-2025"}
    by_new = ActionRecord(RESULT, new.sign(RESULT))
    assert both.verify_in_place(by_new, new.key_id) is Verdict.OK
    assert both.verify_in_place(by_new, old.key_id) is Verdict.BAD_SIGNATURE  # right key name, wrong place
    assert both.verify_in_place(ActionRecord(RESULT, None), new.key_id) is Verdict.UNSIGNED
    assert both.verify_in_place(by_new, "f" * 32) is Verdict.UNTRUSTED
