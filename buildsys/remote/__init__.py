"""Remote stores: the contract (:mod:`.base`), the backends (file, http, s3, chosen by URL
scheme) and the cache layer that pulls and pushes verified, signed results
(:mod:`.cache`). Backends are imported on first use, so importing this package is cheap
(no pycurl, no boto3)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from buildsys.project.config import ConfigError, RemoteSettings
from buildsys.remote.base import (
    CorruptContent,
    NotFound,
    Remote,
    RemoteError,
    RemoteRefused,
    RemoteUnavailable,
)

__all__ = [
    "CorruptContent",
    "NotFound",
    "Remote",
    "RemoteError",
    "RemoteRefused",
    "RemoteUnavailable",
    "open_remote",
]


def open_remote(url: str, options: RemoteSettings | None = None) -> Remote:
    """The backend for ``url`` (``file://``, ``http(s)://``, ``s3://``), configured by
    ``options`` (resolved settings; its ``url`` is ignored). Raises ConfigError for a URL or
    setting that cannot work; never touches the network."""
    options = (options or RemoteSettings()).resolved()
    where = options.where("url")
    timeout_s, retries, parallel = options.timeout_s, options.retries, options.parallel
    assert timeout_s is not None and retries is not None and parallel is not None  # resolved
    scheme = urlsplit(url).scheme
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"{where}: field 'url': {url!r}: use file:///absolute/path")
        from buildsys.remote.file import FileRemote

        return FileRemote(Path(unquote(parts.path)), parallel=parallel)
    if scheme in ("http", "https"):
        from buildsys.remote.http import HttpRemote

        try:
            return HttpRemote(
                url,
                username=options.username,
                password=options.password(),
                timeout_s=timeout_s,
                retries=retries,
                parallel=parallel,
                zstd=bool(options.zstd),
            )
        except RemoteError as exc:
            raise ConfigError(f"{where}: field 'url': {exc}") from None
    if scheme == "s3":
        if options.zstd:
            raise ConfigError(f"{options.where('zstd')}: field 'zstd': only the http remote compresses")
        from buildsys.remote.s3 import S3Remote

        try:
            return S3Remote(
                url,
                endpoint_url=options.s3_endpoint_url,
                region=options.s3_region,
                access_key=options.username,
                secret_key=options.password(),
                timeout_s=timeout_s,
                retries=retries,
                parallel=parallel,
            )
        except RemoteError as exc:
            raise ConfigError(f"{where}: field 'url': {exc}") from None
    raise ConfigError(f"{where}: field 'url': {url!r} is not a file://, http(s):// or s3:// URL")
