"""handoff and bundle verify: a round trip to a second machine (empty store, other cwd), the
model-registry policy, signed bundles and whose code replays them (the code installed here only
when it is the recorded code, else the bundle's own: with the network its stages declare when a
trusted key signed it, fully confined and offline otherwise), and a bundle that was tampered
with in every way we could think of."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from repro_helpers import TESTS, build, confines_fully, files_under, run, stage, write_buildfile

from buildsys.errors import EXIT_BAD_INPUT, EXIT_NOT_REPRODUCIBLE
from buildsys.repro.bundle import BundleError, read_bundle

MODELS = """[models.ckpt]
path = "ckpt"
license = "CC-BY-4.0"
production = true

[models.toy]
path = "ckpt"

[targets.asset]
outputs = ["final", "check"]

"""

BODY = MODELS + (
    stage("asset", "source", "make_base", inputs={"src": "src:data/*.txt"})
    + stage("asset", "dream", "creative", inputs={"base": "source"}, mode="stochastic")
    + stage("asset", "final", "finalize", inputs={"field": "dream"}, params={"scale": 2.0})
    + stage("asset", "check", "validate", inputs={"asset": "final"}, gate=True)
    + stage("asset", "weights", "use_model", model="ckpt")
    + stage("risky", "weights", "use_model", model="toy")
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("studio")
    (root / "ckpt").mkdir()
    (root / "ckpt" / "weights.txt").write_text("0.5 0.25\n")
    (root / "data").mkdir()
    (root / "data" / "prompt.txt").write_text("a small stone bridge\n")
    buildfile = write_buildfile(root, BODY)
    build(buildfile, "asset", "risky")
    return buildfile


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Environments: "studio" signs with the key 'studio', "client" trusts it, "stranger" trusts
    nothing."""
    from buildsys.remote.signing import generate_key

    home = tmp_path_factory.mktemp("keys")
    public = generate_key("studio", home / "keys").partition(":")[2]
    configs = {"studio": '[signing]\nkey = "studio"\n', "client": f'[trust]\nkeys = {{ studio = "{public}" }}\n', "stranger": ""}
    envs = {}
    for name, text in configs.items():
        (home / f"{name}.toml").write_text(text)
        envs[name] = {"BUILDSYS_CONFIG": str(home / f"{name}.toml"), "BUILDSYS_KEYS_DIR": str(home / "keys" if name == "studio" else home / "none")}
    return envs


@pytest.fixture(scope="module")
def bundle(project: Path, keys: dict[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("handoff") / "asset-bundle"
    proc = run(["handoff", "-f", str(project), "asset", "-o", str(out), "--json"], project.parent, env=keys["studio"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["signed_by"] == "studio"
    return out


def _lock(bundle: Path) -> dict:
    return json.loads((bundle / "lock.json").read_text())


def test_bundle_layout_and_lock(bundle: Path, project: Path) -> None:
    files = files_under(bundle)
    assert {"BUILDSYS-BUNDLE", "lock.json", "lock.sig", "artifacts/final/asset.ply", "artifacts/check/report.json", "validation/asset__check.json"} <= files
    assert "code/nondeterministic_recipes.py" in files
    lock = _lock(bundle)
    stages = lock["stages"]
    assert set(stages) == {"asset/source", "asset/dream", "asset/final", "asset/check", "asset/weights"}
    assert {sid for sid, s in stages.items() if s["replay"]} == {"asset/source", "asset/final", "asset/check", "asset/weights"}
    assert "stochastic" in stages["asset/dream"]["not_replayed"]
    final = stages["asset/final"]
    assert final["inputs"]["field"] == stages["asset/dream"]["output"]
    assert final["description"]["params"] == {"scale": 2.0} and final["recipe"]["code"] == final["description"]["recipe"]["code"]
    assert final["fingerprint"]["python"] and "numpy" in final["fingerprint"] and final["metrics"]["wall_s"] >= 0
    assert final["producer"]["confinement"]["level"] in ("confined", "partly confined", "unconfined"), "how the stage was confined"
    model_digest = stages["asset/weights"]["description"]["model"]["digest"]
    assert stages["asset/weights"]["model"] == {"name": "ckpt", "digest": model_digest, "license": "CC-BY-4.0", "production": True}
    assert lock["policy"] == {"violations": [], "forced": False}
    assert lock["order"] == ["asset/source", "asset/dream", "asset/final", "asset/check", "asset/weights"]
    assert lock["builds"] and all(b["file"] in files and b["producer"]["user"] for b in lock["builds"])
    assert lock["validation"] == {"asset/check": "validation/asset__check.json"}
    # every bundled file is listed with its digest and size, and nothing carries the build's paths
    assert set(lock["files"]) == files - {"BUILDSYS-BUNDLE", "lock.json", "lock.sig"} - {f for f in files if (bundle / f).is_dir()}
    for rel in files:
        path = bundle / rel
        if path.is_file():
            assert str(project.parent).encode() not in path.read_bytes(), rel
    assert json.loads((bundle / "validation/asset__check.json").read_text())["passed"] is True


def test_round_trip_on_a_second_machine(bundle: Path, keys: dict[str, dict[str, str]], tmp_path: Path) -> None:
    machine = tmp_path / "machine-2"
    machine.mkdir()
    before = {p: p.stat().st_mtime_ns for p in bundle.rglob("*")}
    proc = run(["verify", str(bundle), "--recipe-path", str(TESTS), "--json"], machine, env=keys["client"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [s["stage"] for s in report["stages"]] == ["asset/source", "asset/final", "asset/check", "asset/weights"]  # upstream first
    assert {s["stage"]: s["status"] for s in report["stages"]} == {
        "asset/source": "reproduced", "asset/final": "reproduced", "asset/check": "reproduced", "asset/weights": "reproduced",
    }
    assert not any("differs" in n for s in report["stages"] for n in s["notes"])
    assert report["signature"] == {"verdict": "ok", "key": "studio"} and "bundle signed by trusted key 'studio'" in report["notes"]
    assert any(n.startswith("recipe code: the code installed here") for n in report["notes"])
    assert list(machine.iterdir()) == []  # an empty store elsewhere: nothing written in the cwd
    assert {p: p.stat().st_mtime_ns for p in bundle.rglob("*")} == before
    text = run(["verify", str(bundle), "--recipe-path", str(TESTS)], machine, env=keys["stranger"])
    assert text.returncode == 0 and "bundle signed by key 'studio', which is not trusted here" in text.stdout


def test_installed_code_runs_only_when_it_is_the_recorded_code(bundle: Path, keys: dict[str, dict[str, str]], tmp_path: Path) -> None:
    """Recipes installed here that differ from the bundled build's (even by a comment) are not
    run: the bundle's own code replays it, and reproduces; with no trusted signature it runs only
    fully confined, with the network off, and the notes say how to give it more."""
    cosmetic, behavioural = tmp_path / "cosmetic", tmp_path / "behavioural"
    source = (TESTS / "nondeterministic_recipes.py").read_text()
    commented = source.replace("    heights = np.cumsum(", "    # reviewed\n    heights = np.cumsum(")
    for folder, text in ((cosmetic, commented), (behavioural, source.replace("np.cumsum(field, axis=0)", "np.cumsum(field, axis=1)"))):
        folder.mkdir()
        (folder / "nondeterministic_recipes.py").write_text(text)
    for folder in (cosmetic, behavioural):
        proc = run(["verify", str(bundle), "--recipe-path", str(folder), "--json"], tmp_path, env=keys["client"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert {s["status"] for s in report["stages"]} == {"reproduced"}
        assert any(n.startswith("recipe code: the bundle's own (1 files), as asset/final: the recipe code installed here is not") for n in report["notes"])
    assert any("signed by a trusted key: it runs confined, with the network its stages declare" in n for n in report["notes"])
    unvouched = run(["verify", str(bundle), "--recipe-path", str(behavioural), "--json"], tmp_path, env=keys["stranger"])
    report = json.loads(unvouched.stdout)
    assert "bundle signed by key 'studio', which is not trusted here" in " ".join(report["notes"])
    assert any("not signed by a trusted key: it runs only fully confined, with the network off" in n and "--recipe-path" in n
               for n in report["notes"]), report["notes"]
    if confines_fully(bundle):
        assert unvouched.returncode == 0, unvouched.stdout + unvouched.stderr
        assert {s["status"] for s in report["stages"]} == {"reproduced"}
    else:
        assert all("not fully confined" in s["error"] for s in report["stages"]), report["stages"]


EVIL = """
from pathlib import Path


def run(ctx):
    Path({marker!r}).write_text("an installed function ran on the word of an edited lock")
    (ctx.out / "heights.npy").write_bytes(b"")
"""


@pytest.mark.parametrize("signature", ["stripped", "kept"])
def test_an_edited_lock_never_runs_an_installed_function(bundle: Path, keys: dict[str, dict[str, str]], tmp_path: Path, signature: str) -> None:
    """The bug: a lock whose description names another installed function, re-keyed to match,
    ran that function. Now it never runs: (kept) the signature no longer verifies, and the
    bundle is refused; (stripped) its code is not the recorded code, and the bundle does not
    carry it, so that stage is not replayed."""
    from buildsys.keys.action import action_key

    installed = tmp_path / "installed"
    installed.mkdir()
    marker = tmp_path / "ran"
    (installed / "evil_recipes.py").write_text(EVIL.format(marker=str(marker)))
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    lock = _lock(copy)
    final = lock["stages"]["asset/final"]
    final["description"]["recipe"]["ref"] = "evil_recipes:run"
    final["recipe"] = final["description"]["recipe"]
    final["key"] = action_key(final["description"])
    os.chmod(copy / "lock.json", 0o644)
    (copy / "lock.json").write_text(json.dumps(lock))
    if signature == "stripped":
        (copy / "lock.sig").unlink()
    proc = run(["verify", str(copy), "--recipe-path", str(TESTS), "--recipe-path", str(installed), "--json"], tmp_path, env=keys["client"])
    if signature == "kept":
        assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
        assert "does not verify: the bundle changed after it was signed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    else:
        assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stdout + proc.stderr
        final = {s["stage"]: s for s in json.loads(proc.stdout)["stages"]}["asset/final"]
        assert final["status"] == "error" and "evil_recipes" in final["error"] and final["rebuilt_tree"] is None, final
    assert not marker.exists()


def test_diff_between_bundle_and_store_record(bundle: Path, project: Path) -> None:
    proc = run(["diff", "-f", str(project), "asset@-1", str(bundle), "--json"], project.parent)
    assert proc.returncode == 0, proc.stderr
    verdicts = {s["stage"]: s["verdict"] for s in json.loads(proc.stdout)["stages"]}
    assert {v for sid, v in verdicts.items() if sid.startswith("asset/")} == {"same"}


def test_policy_refuses_unlicensed_model_unless_forced(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "risky"
    proc = run(["handoff", "-f", str(project), "risky", "-o", str(out)], project.parent)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "model 'toy'" in proc.stderr and "no licence" in proc.stderr and "production-ready" in proc.stderr
    assert not out.exists()
    proc = run(["handoff", "-f", str(project), "risky", "-o", str(out), "--force"], project.parent)
    assert proc.returncode == 0, proc.stderr
    assert "FORCED" in proc.stdout
    lock = _lock(out)
    assert lock["policy"]["forced"] is True
    assert any("toy" in v and "no licence" in v for v in lock["policy"]["violations"])
    assert set(lock["models"]["toy"]["violations"]) == {"is not marked production-ready", "has no licence"}
    read_bundle(out)  # a forced bundle is still a valid bundle


def test_handoff_refuses_a_non_empty_destination(project: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    proc = run(["handoff", "-f", str(project), "asset", "-o", str(tmp_path)], project.parent)
    assert proc.returncode == EXIT_BAD_INPUT and "not an empty directory" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- tampering


def _first_blob(b: Path) -> Path:
    return sorted((b / "blobs").iterdir())[0]


def _flip_byte(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_lock(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(b: Path) -> None:
        lock = _lock(b)
        edit(lock)
        (b / "lock.json").write_text(json.dumps(lock))
    return apply


def _set_threads(lock: dict) -> None:
    lock["stages"]["asset/final"]["threads"] = "two"


def _change_param(lock: dict) -> None:
    lock["stages"]["asset/final"]["description"]["params"]["scale"] = 3.0


TAMPERING: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "corrupt blob byte": (lambda b: _flip_byte(_first_blob(b)), ["blobs/", "hashes to"]),
    "corrupt artifact byte": (lambda b: _flip_byte(b / "artifacts/final/asset.ply"), ["artifacts/final/asset.ply", "hashes to"]),
    "removed file": (lambda b: (b / "validation/asset__check.json").unlink(), ["validation/asset__check.json", "missing"]),
    "unlisted file": (lambda b: (b / "artifacts/final/extra.txt").write_text("x"), ["extra.txt", "not listed"]),
    "path traversal": (_edit_lock(lambda lock: lock["files"].update({"artifacts/../../evil.txt": {"digest": "0" * 64, "size": 1}})),
                       ["lock.json", "files.artifacts/../../evil.txt", ".."]),
    "absolute path": (_edit_lock(lambda lock: lock["files"].update({"/tmp/evil.txt": {"digest": "0" * 64, "size": 1}})),
                      ["lock.json", "files./tmp/evil.txt", "absolute"]),
    "traversal in tree": (_edit_lock(lambda lock: next(iter(lock["trees"].values())).update({"../evil": ["0" * 64, 1, False]})),
                          ["lock.json", "trees.", "../evil"]),
    "symlink": (lambda b: os.symlink("/etc/hostname", b / "artifacts/final/link.ply"), ["link.ply", "symbolic link"]),
    "symlinked lock": (lambda b: ((b / "lock.json").rename(b / "real-lock"), os.symlink(b / "real-lock", b / "lock.json")), ["lock.json", "symbolic link"]),
    "malformed JSON": (lambda b: (b / "lock.json").write_text((b / "lock.json").read_text()[:-40]), ["lock.json", "malformed JSON at line"]),
    "wrong type": (_edit_lock(_set_threads), ["lock.json", "stages.asset/final.threads", "must be int"]),
    "oversized entry": (_edit_lock(lambda lock: lock["files"]["artifacts/final/asset.ply"].update({"size": 10**15})),
                        ["lock.json", "files.artifacts/final/asset.ply.size", "cap"]),
    "edited description": (_edit_lock(_change_param), ["lock.json", "stages.asset/final.key", "does not hash"]),
    "stage order": (_edit_lock(lambda lock: lock["order"].pop()), ["lock.json", "order", "exactly once"]),
    "lock not an object": (lambda b: (b / "lock.json").write_text("[1, 2]"), ["lock.json", "must be a JSON object"]),
    "lock nested 100,000 deep": (lambda b: (b / "lock.json").write_text("[" * 100_000 + "]" * 100_000), ["lock.json", "nested too deeply"]),
    "missing marker": (lambda b: (b / "BUILDSYS-BUNDLE").unlink(), ["BUILDSYS-BUNDLE", "missing"]),
    "signature of another shape": (lambda b: (b / "lock.sig").write_text('{"key": "studio", "sig": 7}'), ["lock.sig", "sig", "must be string"]),
    "signature not JSON": (lambda b: (b / "lock.sig").write_text("-----BEGIN SIGNATURE-----"), ["lock.sig", "not a signature"]),
    "signature forged": (lambda b: (b / "lock.sig").write_text('{"key": "studio", "sig": "' + "A" * 86 + '=="}'),
                         ["lock.sig", "signature by 'studio' does not verify"]),
    "code edited": (lambda b: (b / "code/nondeterministic_recipes.py").write_text("import os\n"), ["code/nondeterministic_recipes.py", "the lock says"]),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampered_bundle_is_refused(bundle: Path, keys: dict[str, dict[str, str]], tmp_path: Path, name: str) -> None:
    mutate, expected = TAMPERING[name]
    box = tmp_path / "box"
    box.mkdir()
    copy = box / "bundle"
    shutil.copytree(bundle, copy, symlinks=True)
    mutate(copy)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def outside() -> set[str]:
        return {p for p in files_under(tmp_path) if not p.startswith("box/bundle/")}

    outside_before = outside()
    proc = run(["verify", str(copy), "--recipe-path", str(TESTS)], cwd, env=keys["client"])
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("buildsys: error:") and len(message.splitlines()) == 1, message
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert outside() == outside_before
    assert not (tmp_path / "evil.txt").exists() and not (box / "evil").exists()
    if name != "signature forged":  # reading a bundle checks its files; whose signature it is, verify checks
        with pytest.raises(BundleError):
            read_bundle(copy)
