"""Executor settings: where a build's stages run (this machine, or a Ray cluster).

The ``[executor]`` table, in a Buildfile (project-wide: the team's cluster) or the user config
(this machine)::

    [executor]
    kind = "ray"                  # "local" (default) or "ray"
    address = "10.0.0.5:6379"     # the Ray cluster's GCS address; default: $RAY_ADDRESS
    data_plane = "object-store"   # how blobs reach nodes: Ray's "object-store" or the "remote" cache
    node_store = "/var/cache/buildsys"  # each node's local store (its cache); $BUILDSYS_NODE_STORE
                                  # on a node wins; default ~/.cache/buildsys/node-store there
    retries = 3                   # times a stage is retried elsewhere when its node is lost
    connect_timeout_s = 15.0      # how long to wait for the cluster to answer

Layers, later winning field by field: defaults, the Buildfile's table, the user config's table,
``$RAY_ADDRESS`` (the address only), then ``--executor KIND``. Every error names the file and
the field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from buildsys.errors import BuildsysError
from buildsys.project.schema import Fields

KINDS = ("local", "ray")
DATA_PLANES = ("object-store", "remote")


class ExecutorConfigError(BuildsysError):
    """An ``[executor]`` table or flag that cannot work; names the file and the field."""


@dataclass(frozen=True)
class ExecutorSettings:
    """Where stages run. ``None`` means "not set in this layer"."""

    kind: str | None = None
    address: str | None = None
    data_plane: str | None = None
    node_store: str | None = None
    retries: int | None = None
    connect_timeout_s: float | None = None
    origins: dict[str, str] = field(default_factory=dict, compare=False)
    """field name -> where its value came from, for messages."""

    def merge(self, override: "ExecutorSettings") -> "ExecutorSettings":
        changes = {name: getattr(override, name) for name in FIELDS if getattr(override, name) is not None}
        origins = {**self.origins, **{name: override.origins.get(name, "override") for name in changes}}
        return dataclasses.replace(self, **changes, origins=origins)

    def resolved(self) -> "ExecutorSettings":
        """Every unset field filled with its default."""
        values = {**DEFAULTS, **{n: getattr(self, n) for n in FIELDS if getattr(self, n) is not None}}
        return ExecutorSettings(**values, origins=dict(self.origins))

    def where(self, name: str) -> str:
        return self.origins.get(name, "defaults")

    @classmethod
    def from_table(cls, table: Any, where: str) -> "ExecutorSettings":
        """Check an ``[executor]`` table; ``where`` names its file for messages."""
        fields = Fields(lambda dotted, message: ExecutorConfigError(f"{where}: [executor] field {dotted!r}: {message}"))
        if not isinstance(table, Mapping):
            raise ExecutorConfigError(f"{where}: [executor] must be a table")
        table = dict(table)
        fields.known(table, set(FIELDS), "")
        values = {name: _CHECKS[name](fields, table, name) for name in table}
        return cls(**values, origins={name: f"{where} [executor]" for name in values})


DEFAULTS: dict[str, Any] = {
    "kind": "local",
    "address": None,
    "data_plane": "object-store",
    "node_store": None,
    "retries": 3,
    "connect_timeout_s": 15.0,
}
FIELDS = tuple(DEFAULTS)

_CHECKS: dict[str, Callable[[Fields, dict[str, Any], str], Any]] = {
    "kind": lambda f, t, n: f.choice(t, n, KINDS, ""),
    "address": lambda f, t, n: f.get(t, n, str, "") or None,
    "data_plane": lambda f, t, n: f.choice(t, n, DATA_PLANES, ""),
    "node_store": lambda f, t, n: f.get(t, n, str, "") or None,
    "retries": lambda f, t, n: f.number(t, n, "", integer=True, low=0, high=20),
    "connect_timeout_s": lambda f, t, n: f.number(t, n, "", above=0, high=600),
}


def executor_settings(
    buildfile_table: Mapping[str, Any] | None, buildfile_where: str, user_table: Mapping[str, Any] | None, user_where: str,
    kind: str | None = None,
) -> ExecutorSettings:
    """The effective settings: defaults < Buildfile ``[executor]`` < user config ``[executor]``
    < ``$RAY_ADDRESS`` < ``--executor KIND``; returned resolved."""
    settings = ExecutorSettings()
    if buildfile_table is not None:
        settings = settings.merge(ExecutorSettings.from_table(buildfile_table, buildfile_where))
    if user_table is not None:
        settings = settings.merge(ExecutorSettings.from_table(user_table, user_where))
    if os.environ.get("RAY_ADDRESS"):
        settings = settings.merge(ExecutorSettings(address=os.environ["RAY_ADDRESS"], origins={"address": "$RAY_ADDRESS"}))
    if kind is not None:
        settings = settings.merge(ExecutorSettings(kind=kind, origins={"kind": "--executor"}))
    return settings.resolved()
