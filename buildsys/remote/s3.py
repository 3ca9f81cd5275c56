"""The S3 remote (``s3://bucket/prefix``), for AWS S3 and S3-compatible servers (minio, moto).

Layout under the prefix::

    <prefix>/cas/<digest>   blobs
    <prefix>/ac/<key>       action records

Blobs up to 16 MiB move in one request each (``put_object`` from memory, ``get_object``
streamed into the file and hashed on the way); larger ones with boto3's managed transfers
(``upload_file`` / ``download_file``, multipart in 16 MiB parts), so memory stays bounded
(16 MiB a transfer).
(A managed transfer starts a thread pool per call: for many small blobs that cost more than
the request.)

Existence checks for many blobs list the ``cas/`` keys (ListObjectsV2, 1,000 keys a page)
instead of one HEAD per blob: digests are uniformly spread, so each page answers every wanted
digest in its key range, and a scan jumps (``StartAfter``) to the next wanted digest. Where
the bucket is so much larger than the batch that a page answers only a few digests, the rest
are HEADed as before. Credentials
come from the usual boto3 chain (env, ~/.aws, instance role) unless the settings name them
(``username`` = access key id, ``password_env`` = env var holding the secret key). Retries and
timeouts are botocore's (standard mode), sized from the same settings as the HTTP remote.
The bucket must exist; it is never created here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from buildsys.keys.hashing import Digest
from buildsys.remote.base import (
    MAX_RECORD_BYTES,
    BlobsGot,
    CorruptContent,
    FilePath,
    HashingWriter,
    NotFound,
    RemoteError,
    RemoteRefused,
    RemoteUnavailable,
    check_name,
    parallel_get,
    parallel_has,
    parallel_put,
)
from buildsys.remote.retry import RetryPolicy, Transient, call_with_retry
from buildsys.store.atomic import READ_ONLY

_PART = 16 << 20
_CHUNK = 1 << 20
_BODY_ERRORS = (IncompleteReadError, ReadTimeoutError, ResponseStreamingError)
"""A response body cut short or stalled: the request is worth trying again."""
_PAGE_KEYS = 1000
"""Keys a listing page asks for (S3's maximum)."""
_LIST_MIN = 32
"""Below this many digests, ``has_blobs`` HEADs each one (a listing could not pay off)."""
_PAGE_WORTH = 64
"""A full listing page (1,000 keys to parse) costs about this many HEADs (moto on loopback:
~150 ms against ~2 ms; AWS: ~100 ms against ~20 ms); a scan whose page answered fewer wanted
digests leaves the rest to HEADs."""


class S3Remote:
    """A remote in an S3 bucket."""

    probe_min_bytes = 0
    """Always check first: many blobs are checked with a few listings, and S3 bills uploads."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        parallel: int = 8,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise RemoteError(f"{url!r} is not an s3://bucket/prefix URL")
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.parallel = parallel
        self.policy = RetryPolicy(attempts=retries + 1)
        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": retries + 1, "mode": "standard"},
            max_pool_connections=2 * parallel,
        )
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region)
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.transfer = TransferConfig(multipart_threshold=_PART, multipart_chunksize=_PART, max_concurrency=max(2, parallel // 2), use_threads=True)

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def close(self) -> None:
        self.client.close()

    def _key(self, space: str, name: str) -> str:
        return f"{self.prefix}{space}/{check_name(name, space)}"

    def _error(self, exc: Exception, what: str) -> RemoteError:
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return RemoteRefused(f"{self.describe()}: bucket {self.bucket} does not exist")
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return NotFound(f"{self.describe()}: {what} not found")
            if status >= 500 or status in (408, 429):
                return RemoteUnavailable(f"{self.describe()}: {what}: HTTP {status} {code}")
            return RemoteRefused(f"{self.describe()}: {what}: HTTP {status} {code}")
        if isinstance(exc, NoCredentialsError):
            return RemoteRefused(f"{self.describe()}: {what}: no AWS credentials (set username/password_env or the usual AWS variables)")
        return RemoteUnavailable(f"{self.describe()}: {what}: {type(exc).__name__}: {exc}")

    def _exists(self, key: str, what: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, what)
            if isinstance(error, NotFound):
                return False
            raise error from None

    def _head_each(self, digests: Iterable[Digest]) -> set[Digest]:
        return parallel_has(lambda d: self._exists(self._key("cas", d), f"blob {d}"), digests, self.parallel)

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        wanted = sorted(set(digests))
        if len(wanted) < _LIST_MIN:
            return self._head_each(wanted)
        found, rest, dense = self._scan(wanted, max_pages=1)  # a small bucket: one page says all
        if rest and not dense:
            size = -(-len(rest) // self.parallel)  # contiguous runs: a page serves one run
            runs = [rest[i : i + size] for i in range(0, len(rest), size)]
            with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="remote-list") as pool:
                scans = list(pool.map(self._scan, runs))
            rest = []
            for more, left, _ in scans:
                found |= more
                rest += left
        return found | self._head_each(rest)

    def _scan(self, run: list[Digest], max_pages: int | None = None) -> tuple[set[Digest], list[Digest], bool]:
        """List the ``cas/`` keys from each wanted digest of ``run`` (sorted) on, a page at a
        time. Returns (present, unanswered, dense): the scan stops after ``max_pages`` pages, or
        early when a page answered fewer than ``_PAGE_WORTH`` digests (``dense``: the bucket
        is too crowded for listing to beat HEADs)."""
        base = f"{self.prefix}cas/"
        found: set[Digest] = set()
        i = pages = 0
        start = run[0][:-1]  # just before run[0]: keys sort by digest (fixed-length hex)
        while i < len(run):
            if max_pages is not None and pages >= max_pages:
                return found, run[i:], False
            try:
                page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, StartAfter=base + start, MaxKeys=_PAGE_KEYS)
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "list blobs") from None
            pages += 1
            keys = {item["Key"][len(base) :] for item in page.get("Contents", ())}
            last = max(keys, default="")
            first = i
            while i < len(run) and (not page.get("IsTruncated") or run[i] <= last):
                if run[i] in keys:
                    found.add(run[i])
                i += 1
            if i < len(run) and i - first < _PAGE_WORTH:
                return found, run[i:], True
            if i < len(run):
                start = max(run[i][:-1], last)
        return found, [], False

    def get_blob(self, digest: Digest, dest: FilePath) -> Digest | None:
        key, what = self._key("cas", digest), f"blob {digest}"

        def attempt() -> Digest | None:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            if response.get("ContentLength", 0) > _PART:  # large: ranged parts in parallel
                body.close()
                os.makedirs(os.path.dirname(dest), exist_ok=True)  # as create_read_only would
                self.client.download_file(self.bucket, key, str(dest), Config=self.transfer)
                os.chmod(dest, READ_ONLY)  # bound for the store, which moves blobs in read-only
                return None
            with body, HashingWriter(dest) as out:
                try:
                    while chunk := body.read(_CHUNK):
                        out.write(chunk)
                except _BODY_ERRORS as exc:  # botocore retried the request, not its body
                    raise Transient(f"{type(exc).__name__}: {exc}") from None
                return out.hexdigest()

        def give_up(reason: str, attempts: int) -> Exception:
            return RemoteUnavailable(f"{self.describe()}: {what}: {reason} (after {attempts} tries)")

        try:
            return call_with_retry(attempt, self.policy, give_up)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._error(exc, what) from None

    def put_blob(self, digest: Digest, source: Path) -> None:
        key = self._key("cas", digest)
        try:
            if os.path.getsize(source) <= _PART:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=Path(source).read_bytes())
            else:
                self.client.upload_file(str(source), self.bucket, key, Config=self.transfer)
        except FileNotFoundError:
            raise RemoteError(f"{source}: local blob to upload is missing") from None
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            cause = (exc.__cause__ or exc.__context__) if isinstance(exc, Boto3Error) else exc
            if isinstance(cause, (ClientError, BotoCoreError)):
                raise self._error(cause, f"upload blob {digest}") from None
            raise RemoteUnavailable(f"{self.describe()}: upload blob {digest}: {exc}") from None

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        return parallel_get(self.get_blob, digests, dest_for, self.parallel)

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        parallel_put(self.put_blob, blobs, self.parallel)

    def get_action(self, key: Digest) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key("ac", key))
            if response.get("ContentLength", 0) > MAX_RECORD_BYTES:
                response["Body"].close()
                raise CorruptContent(f"{self.describe()}: record {key} is larger than {MAX_RECORD_BYTES} bytes")
            return response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, f"record {key}")
            if isinstance(error, NotFound):
                return None
            raise error from None

    def put_action(self, key: Digest, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key("ac", key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"record {key}") from None
