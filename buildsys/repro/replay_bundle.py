"""``verify BUNDLE``: check a hand-off bundle, decide whose code may replay it, and replay it.

Integrity first (:func:`buildsys.repro.bundle.read_bundle`: every file against the lock). Then
the signature: a bundle signed by a key in ``[trust] keys`` is the signer's word for everything
in it; a signature that does not verify refuses the bundle (it changed after it was signed).
Then the code each replayable stage runs:

1. the recipe code installed here (the recipe path, then installed packages), when for every
   replayable stage it is the code the stage was built with (its identity's digest). An edited
   lock can name any installed function, re-keyed to match; none runs unless its code is the
   recorded code;
2. else the code the bundle carries (:mod:`buildsys.repro.carry`), when it hashes to the recorded
   code. Every stage runs confined (:mod:`buildsys.execution.confine`); a bundle's own code gets
   the network its stages declare only when a trusted key signed the bundle (the code is then
   the signer's word). Otherwise it runs with the network off, and only in fully confined
   workers: where the kernel confines less, its stages fail before any of its code runs.

Nothing is written outside a scratch folder, removed at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from buildsys.keys.fingerprint import from_environment
from buildsys.keys.identity import RecipeIdentity, RecipeNotFound, recipe_identity
from buildsys.project.config import config_path
from buildsys.remote.signing import BUNDLE_DOMAIN, TrustedKeys, Verdict
from buildsys.repro.bundle import SIGNATURE, Bundle, read_bundle
from buildsys.repro.carry import carried_identity
from buildsys.repro.lock import BundleError, LockedStage
from buildsys.repro.variation import Variation, provide_locale
from buildsys.repro.verdicts import VerifyReport
from buildsys.repro.verify import Replayer, StagePlan, identity_notes, replay_all
from buildsys.store.atomic import remove_tree
from buildsys.store.local import LocalStore


def signature_verdict(bundle: Bundle, trusted: TrustedKeys) -> tuple[Verdict, str]:
    """The bundle's signature checked against ``trusted``, and a sentence saying so. A signature
    that does not verify raises BundleError."""
    verdict, key = trusted.verify_message(bundle.signature, BUNDLE_DOMAIN + bundle.lock_bytes)
    if verdict is Verdict.BAD_SIGNATURE:
        raise BundleError(f"{bundle.root / SIGNATURE}: the signature{f' by {key!r}' if key else ''} does not verify: the bundle changed after it was signed")
    text = {
        Verdict.OK: f"signed by trusted key {key!r}",
        Verdict.UNTRUSTED: f"signed by key {key!r}, which is not trusted here ([trust] keys in {config_path()})",
        Verdict.UNSIGNED: "not signed",
    }[verdict]
    return verdict, text


def _installed(stage: LockedStage, recipe_path: list[Path]) -> tuple[RecipeIdentity | None, str | None]:
    """The identity of the stage's recipe as installed here, and why it is not the recorded code."""
    recipe = stage.description["recipe"]
    try:
        identity = recipe_identity(recipe["ref"], recipe_path)
    except RecipeNotFound as exc:
        return None, f"{stage.id}: recipe {recipe['ref']} is not installed here ({exc})"
    if identity.code != recipe["code"]:
        return identity, f"{stage.id}: the recipe code installed here is not the code it was built with"
    return identity, None


def verify_bundle(bundle_dir: Path, recipe_path: list[Path], trusted: TrustedKeys, variation: Variation, jobs: int = 1,
                  assets_dir: Path | None = None, repeat: int = 1, bisect: str | None = None) -> VerifyReport:
    """Check a bundle, then replay its replayable stages in an empty scratch store with the code
    they were built with (see the module docstring for whose, and how confined). Raises
    BundleError for a bundle that cannot be trusted or read."""
    bundle = read_bundle(bundle_dir)
    verdict, signed = signature_verdict(bundle, trusted)
    replayable = [s for s in bundle.lock.stages.values() if s.replay]
    scratch = Path(tempfile.mkdtemp(prefix="buildsys-verify-bundle-"))
    try:
        installed = [_installed(s, recipe_path) for s in replayable]
        problems = [why for _, why in installed if why]
        plans = [StagePlan(s.id, s.key, s.description, s.output, s.threads, s.seconds, s.memory_mb) for s in replayable]
        vouched = verdict is Verdict.OK
        if not problems:
            roots = recipe_path
            code_note = "recipe code: the code installed here, the code the stages were built with"
            for plan, (identity, _) in zip(plans, installed):
                plan.notes += identity_notes(plan.description["recipe"], identity, "bundled build's") if identity else []
        else:
            roots = [bundle.extract_code(scratch / "code")]
            code_note = f"recipe code: the bundle's own ({len(bundle.code_files)} files), as {problems[0]}; " + (
                "signed by a trusted key: it runs confined, with the network its stages declare" if vouched else
                "not signed by a trusted key: it runs only fully confined, with the network off (trust the signer's key, "
                f"[trust] keys in {config_path()}, or install the recipes it was built with, --recipe-path, to give it the network)"
            )
            for plan in plans:
                _carried_plan(plan, roots[0])
        store = LocalStore(scratch / "store")
        for stage in replayable:
            for tree in stage.needed_trees():
                bundle.load_tree(tree, store.blobs)
        notes = [f"{len(bundle.files)} bundled files intact (digest and size match the lock)", f"bundle {signed}", code_note]
        skipped = [s.id for s in bundle.lock.stages.values() if not s.replay]
        if skipped:
            notes.append(f"not replayed (inputs not bundled or stochastic): {', '.join(skipped)}")
        locale_path, note = provide_locale(scratch) if "env" in variation.names else (None, None)
        notes += [note] if note else []
        recipes = tuple(plan.description["recipe"]["ref"] for plan in plans)
        own_code = bool(problems) and not vouched
        replayer = Replayer(store, from_environment(), roots, variation, jobs, assets_dir, locale_path, recipes,
                            network=not own_code, confined_only=own_code)
        try:
            verdicts = replay_all(plans, replayer, repeat, bisect)
        finally:
            replayer.close()
        report = VerifyReport(str(bundle_dir.name), variation.to_list(), verdicts, assets_dir, notes, repeat)
        report.signature = {"verdict": verdict.value, "key": bundle.signature.get("key") if bundle.signature else None}
        return report
    finally:
        remove_tree(scratch)


def _carried_plan(plan: StagePlan, code_dir: Path) -> None:
    """Mark a plan whose carried code is not its recorded code as a problem (never run)."""
    recipe = plan.description["recipe"]
    try:
        identity = carried_identity(recipe["ref"], code_dir)
    except RecipeNotFound as exc:
        plan.problem = str(exc)
        return
    if identity.code != recipe["code"]:
        plan.problem = f"the carried code of {recipe['ref']} does not hash to the recorded code ({identity.code[:12]}, recorded {recipe['code'][:12]})"
        return
    plan.notes += [n for n in identity_notes(recipe, identity, "bundled build's") if n.startswith("libraries")]
