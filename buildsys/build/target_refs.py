"""Target refs (``refs/targets/NAME``): each target's last built stages, by key, tree and how
each result was first obtained (what ``explain`` and ``pin`` read). A build writes only the refs
that changed: a ref whose every stage came unchanged from the resolved-graph index, while no ref
was written since the index recorded them, is not even read."""

from __future__ import annotations

from buildsys.build.graph_index import GraphIndex
from buildsys.build.reports import StageReport
from buildsys.build.session import Session


def write_target_refs(
    session: Session, index: GraphIndex | None, target_names: list[str], reports: dict[str, StageReport], from_index: set[str],
) -> None:
    project = session.project
    vouched = index is not None and index.same_buildfile and index.refs_unchanged(session.store.root)
    refs = {}
    for name in target_names:
        stage_ids = project.stage_ids(name)
        if not all(reports[sid].ok for sid in stage_ids):
            continue
        if vouched and all(sid in from_index for sid in stage_ids):
            continue
        last = session.last_build(name)
        old = (last or {}).get("stages", {})
        entries = {}
        for stage_name, sid in zip(project.shapes[name].stages, stage_ids):
            report = reports[sid]
            previous = old.get(stage_name, {})
            if previous.get("key") == report.key and previous.get("tree") == report.tree:
                # the same result: its entry keeps how it was first obtained, so a no-op after
                # a build rewrites no ref (the last build's statuses are in its record)
                entries[stage_name] = previous
                continue
            entry = {"key": report.key, "description": report.description, "tree": report.tree, "status": report.status}
            if previous.get("key") == report.key:
                if previous.get("previous"):
                    entry["previous"] = previous["previous"]
            elif previous.get("description"):
                entry["previous"] = previous["description"]
            entries[stage_name] = entry
        ref = {"stages": entries, "outputs": list(project.shapes[name].outputs)}
        if ref != last:  # already read above: an unchanged ref is not read again to compare
            refs[name] = ref
    session.store.refs.write_many("targets", refs)
