"""Garbage collection roots: every tree and action that a ref (a target's last build, a pin, an
approval) names is kept; the rest of the store can go."""

from __future__ import annotations

from buildsys.store.local import REF_KINDS, GcReport, LocalStore


def roots(store: LocalStore) -> tuple[set[str], set[str]]:
    """(trees, action keys) that gc keeps: everything the refs name."""
    trees: set[str] = set()
    actions: set[str] = set()
    for kind in REF_KINDS:
        for name in store.list_refs(kind):
            ref = store.read_ref(kind, name) or {}
            for entry in ref.get("stages", {}).values():
                if isinstance(entry, dict):
                    actions.add(entry["key"])
                    trees.add(entry["tree"])
                elif isinstance(entry, str):
                    trees.add(entry)
            trees.update(ref.get("trees", []))
    return trees, actions


def collect_garbage(store: LocalStore, dry_run: bool) -> GcReport:
    with store.using(exclusive=True):
        trees, actions = roots(store)
        return store.gc(trees, actions, dry_run=dry_run)
