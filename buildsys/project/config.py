"""User configuration and remote settings.

The user config is TOML at ``$BUILDSYS_CONFIG``, else ``$XDG_CONFIG_HOME/buildsys/config.toml``
(``~/.config/buildsys/config.toml``). This module owns three tables, checks a fourth
(``[executor]``, :mod:`buildsys.project.executor`) and ignores any other::

    [remote]
    url = "https://cache.example:8080/buildsys"   # file:///mnt/cache, http(s)://..., s3://bucket/prefix
    read_only = false
    username = "ci"                 # HTTP basic auth user; for s3: the access key id
    password_env = "CACHE_PASSWORD" # name of the env var holding the password / s3 secret key
    timeout_s = 5.0                 # deadline of a request without a large body; a large one
                                    # gets 1 s more per 32 KiB (see buildsys.remote.deadline)
    retries = 2                     # extra tries of a request that failed transiently
    parallel = 8                    # concurrent transfers (and HTTP connection pool size)
    zstd = false                    # http only: store blobs zstd-compressed under cas.zst/
    s3_endpoint_url = "http://127.0.0.1:9000"   # S3-compatible servers (minio, moto)
    s3_region = "us-east-1"

    [signing]
    key = "alice-2025"              # signs pushed action records; file <keys dir>/<name>.key

    [trust]
    keys = { ci-2025 = "base64 public key", alice-2025 = "..." }

Remote settings are layered, later layers winning field by field: defaults, the Buildfile's
``[remote]`` table (project-wide: where the team's cache is), the user config's ``[remote]``
(this machine: credentials, read-only), then the ``--remote URL`` flag. An empty ``url``
("" in any layer or ``--remote ''``) turns the remote off. Every error names the file and field.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from buildsys.errors import BuildsysError
from buildsys.project.schema import Fields


class ConfigError(BuildsysError):
    """A configuration file or table is invalid; the message names the file and the field."""


class MissingSecret(ConfigError):
    """The environment variable ``password_env`` names is not set: this machine's environment
    lacks the remote's credentials. A build skips the remote (with a warning); it is not bad input."""


@dataclass(frozen=True)
class RemoteSettings:
    """How to reach the remote cache. ``None`` means "not set in this layer"."""

    url: str | None = None
    read_only: bool | None = None
    username: str | None = None
    password_env: str | None = None
    timeout_s: float | None = None
    retries: int | None = None
    parallel: int | None = None
    zstd: bool | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    origins: dict[str, str] = field(default_factory=dict, compare=False)
    """field name -> where its value came from (file and table), for error messages."""

    def merge(self, override: "RemoteSettings") -> "RemoteSettings":
        """These settings with every field that ``override`` sets replaced by its value."""
        changes: dict[str, Any] = {}
        origins = dict(self.origins)
        for name in FIELDS:
            value = getattr(override, name)
            if value is not None:
                changes[name] = value
                origins[name] = override.origins.get(name, "override")
        return dataclasses.replace(self, **changes, origins=origins)

    def resolved(self) -> "RemoteSettings":
        """Every unset field filled with its default."""
        return RemoteSettings(**{**DEFAULTS, **{n: getattr(self, n) for n in FIELDS if getattr(self, n) is not None}}, origins=dict(self.origins))

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def where(self, name: str) -> str:
        return self.origins.get(name, "defaults")

    def password(self) -> str | None:
        """The password from the environment variable named by ``password_env``."""
        if not self.password_env:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise MissingSecret(f"{self.where('password_env')}: field 'password_env': environment variable {self.password_env} is not set")
        return value

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> "RemoteSettings":
        """Validate a ``[remote]`` table (from a Buildfile or the user config). ``where`` names
        the file for messages, e.g. ``"Buildfile.toml"``."""
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [remote] must be a table")
        fields = _fields(where, "remote")
        table = dict(table)
        fields.known(table, set(FIELDS), "")
        values = {name: _CHECKS[name](fields, table, name) for name in table}
        return cls(**values, origins={name: f"{where} [remote]" for name in values})


DEFAULTS: dict[str, Any] = {
    "url": None,
    "read_only": False,
    "username": None,
    "password_env": None,
    "timeout_s": 5.0,
    "retries": 2,
    "parallel": 8,
    "zstd": False,
    "s3_endpoint_url": None,
    "s3_region": None,
}
FIELDS = tuple(DEFAULTS)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^(file|https?|s3)://")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NOT_A_KEY_NAME = "is not a key name (letters, digits, . _ -; at most 64)"


def _fields(where: str | Path, table: str) -> Fields:
    return Fields(lambda dotted, message: ConfigError(f"{where}: [{table}] field {dotted!r}: {message}"))


def _string(fields: Fields, table: dict[str, Any], name: str) -> str:
    return fields.get(table, name, str, "")


_CHECKS: dict[str, Callable[[Fields, dict[str, Any], str], Any]] = {
    "url": lambda f, t, n: _string(f, t, n) and f.matching(t[n], _URL, n, "is not a file://, http(s):// or s3:// URL"),
    "read_only": lambda f, t, n: f.get(t, n, bool, ""),
    "username": _string,
    "password_env": lambda f, t, n: f.matching(_string(f, t, n), _ENV_NAME, n, "is not an environment variable name"),
    "timeout_s": lambda f, t, n: f.number(t, n, "", above=0, high=3600),
    "retries": lambda f, t, n: f.number(t, n, "", integer=True, low=0, high=10),
    "parallel": lambda f, t, n: f.number(t, n, "", integer=True, low=1, high=256),
    "zstd": lambda f, t, n: f.get(t, n, bool, ""),
    "s3_endpoint_url": _string,
    "s3_region": _string,
}


@dataclass(frozen=True)
class UserConfig:
    """The parts of the user config that this module owns."""

    path: Path | None
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    signing_key: str | None = None
    trusted: dict[str, str] = field(default_factory=dict)
    """key name -> base64 Ed25519 public key (32 bytes)."""
    executor: dict[str, Any] | None = None
    """The ``[executor]`` table, checked (:class:`buildsys.project.executor.ExecutorSettings`)."""


def _user_path(variable: str, name: str) -> Path:
    """``$variable`` if set, else ``name`` in buildsys's folder of ``$XDG_CONFIG_HOME``."""
    explicit = os.environ.get(variable)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "buildsys" / name


def config_path() -> Path:
    return _user_path("BUILDSYS_CONFIG", "config.toml")


def keys_dir() -> Path:
    return _user_path("BUILDSYS_KEYS_DIR", "keys")


def load_user_config(path: Path | None = None) -> UserConfig:
    """Read the user config. A missing default file is an empty config; a missing file named
    by ``$BUILDSYS_CONFIG`` (or ``path``) is an error."""
    explicit = path is not None or bool(os.environ.get("BUILDSYS_CONFIG"))
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: config file does not exist") from None
        return UserConfig(path=None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    import tomli  # only where there is a config to parse

    try:
        raw = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    except RecursionError:  # tomli's own limit on nested arrays and inline tables (400)
        raise ConfigError(f"{path}: invalid TOML (nested too deeply)") from None
    remote = RemoteSettings.from_table(raw.get("remote", {}), str(path))
    executor = raw.get("executor")
    if executor is not None:
        from buildsys.project.executor import ExecutorSettings

        ExecutorSettings.from_table(executor, str(path))
    return UserConfig(
        path=path, remote=remote, signing_key=_signing_key(raw, path), trusted=_trusted(raw, path), executor=executor,
    )


def _signing_key(raw: dict[str, Any], path: Path) -> str | None:
    fields = _fields(path, "signing")
    table = raw.get("signing", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [signing] must be a table")
    fields.known(table, {"key"}, "")
    name = fields.get(table, "key", str, "")
    return None if name is None else fields.matching(name, KEY_NAME, "key", _NOT_A_KEY_NAME)


def _trusted(raw: dict[str, Any], path: Path) -> dict[str, str]:
    fields = _fields(path, "trust")
    table = raw.get("trust", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [trust] must be a table")
    fields.known(table, {"keys"}, "")
    keys = fields.table(table.get("keys", {}), "keys")
    out: dict[str, str] = {}
    for name, value in keys.items():
        where = f"keys.{name}"
        fields.matching(name, KEY_NAME, where, _NOT_A_KEY_NAME)
        fields.value(value, str, where)
        try:
            decoded = base64.b64decode(value, validate=True)
        except ValueError:
            decoded = b""
        if len(decoded) != 32:
            raise fields.error(where, "not a base64 Ed25519 public key (32 bytes)")
        out[name] = value
    return out


def load_settings(
    buildfile_remote_table: Mapping[str, Any] | None,
    cli_url: str | None,
    buildfile_where: str = "Buildfile.toml",
    user: UserConfig | None = None,
) -> RemoteSettings:
    """The effective remote settings: defaults < Buildfile ``[remote]`` < user config
    ``[remote]`` < ``--remote URL``; returned resolved (no field left unset but url and the
    optional ones). ``user`` defaults to :func:`load_user_config`."""
    user = user if user is not None else load_user_config()
    settings = RemoteSettings()
    if buildfile_remote_table:
        settings = settings.merge(RemoteSettings.from_table(buildfile_remote_table, buildfile_where))
    settings = settings.merge(user.remote)
    if cli_url is not None:
        settings = settings.merge(RemoteSettings.from_table({"url": cli_url}, "--remote"))
        settings = dataclasses.replace(settings, origins={**settings.origins, "url": "--remote"})
    return settings.resolved()
