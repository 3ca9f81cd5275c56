"""The S3 remote (``s3://bucket/prefix``), for AWS S3 and S3-compatible servers (minio, moto).

Layout under the prefix::

    <prefix>/cas/<digest>   blobs
    <prefix>/ac/<place>/<key>   action records, in their signer's place

Blobs up to 16 MiB move in one request each (``put_object`` from memory, ``get_object`` read
whole and hashed as it is written); larger ones in 16 MiB parts, ``max(2, parallel / 2)`` at a
time (a multipart upload; ranged GETs written and hashed in order), so memory stays bounded
(16 MiB a part in flight).

Every call has a deadline (:mod:`buildsys.remote.deadline`): botocore bounds each read by
``timeout_s`` but not a whole request, so calls run on a :class:`Watchdog` and are abandoned
once the tries could have taken the transfer's deadline each. Abandoned calls never touch a
file (parts and bodies come back as bytes, written by the caller), so nothing they do late can
reach the store. Completing a multipart upload makes the server assemble the whole object, so
that one request is made with a read timeout of the object's whole deadline; if it fails
anyway, the object is looked for before the upload is given up (a completion retried while the
first still ran made 512 MiB pushes fail at the old 5 s read timeout).

Existence checks for many blobs list the ``cas/`` keys (ListObjectsV2, 1,000 keys a page)
instead of one HEAD per blob: digests are uniformly spread, so each page answers every wanted
digest in its key range, and a scan jumps (``StartAfter``) to the next wanted digest. Where
the bucket is so much larger than the batch that a page answers only a few digests, the rest
are HEADed as before. Credentials come from the usual boto3 chain (env, ~/.aws, instance role)
unless the settings name them (``username`` = access key id, ``password_env`` = env var
holding the secret key). Retries are botocore's (standard mode), sized from the same settings
as the HTTP remote. The bucket must exist; it is never created here.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar
from urllib.parse import urlsplit

import boto3
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
    record_name,
)
from buildsys.remote.deadline import DeadlineMissed, Deadlines, Watchdog, wait
from buildsys.remote.retry import RetryPolicy, Transient, call_with_retry

T = TypeVar("T")

_PART = 16 << 20
_BODY_ERRORS = (IncompleteReadError, ReadTimeoutError, ResponseStreamingError)
"""A response body cut short or stalled: the request is worth trying again."""
_BOTO_ERRORS = (ClientError, BotoCoreError)
_PAGE_KEYS = 1000
"""Keys a listing page asks for (S3's maximum)."""
_PAGE_BYTES = 256 << 10
"""About the size of a full listing page's answer, for its deadline."""
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
        self.part_concurrency = max(2, parallel // 2)
        self.policy = RetryPolicy(attempts=retries + 1)
        self.deadlines = Deadlines(timeout_s)
        self._config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": retries + 1, "mode": "standard"},
            max_pool_connections=2 * parallel + self.part_concurrency,
        )
        self._session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region)
        self._session_lock = threading.Lock()  # a boto3 session is not thread-safe
        self.client = self._session.client("s3", endpoint_url=endpoint_url, config=self._config)
        self.watchdog = Watchdog("remote-s3")

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def close(self) -> None:
        self.watchdog.close()
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

    def _call(self, what: str, nbytes: int, fn: Callable[[], T]) -> T:
        """``fn()`` on the watchdog, given up once the tries botocore makes inside could have
        taken the deadline of a transfer of ``nbytes`` each (:meth:`RetryPolicy.bound`); boto
        errors become RemoteErrors."""
        return self._waited(what, nbytes, self.watchdog.submit(fn))

    def _waited(self, what: str, nbytes: int, future: Future[T]) -> T:
        try:
            return wait(future, self.policy.bound(self.deadlines.for_bytes(nbytes)))
        except DeadlineMissed as exc:
            raise RemoteUnavailable(f"{self.describe()}: {what}: timed out ({exc})") from None
        except _BOTO_ERRORS as exc:
            raise self._error(exc, what) from None

    def check(self) -> None:
        try:
            self._call(f"bucket {self.bucket}", 0, lambda: self.client.head_bucket(Bucket=self.bucket))
        except NotFound:
            raise RemoteRefused(f"{self.describe()}: bucket {self.bucket} does not exist") from None

    # existence ---------------------------------------------------------------------------

    def _exists(self, key: str, what: str) -> bool:
        try:
            self._call(what, 0, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
            return True
        except NotFound:
            return False

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
            listing = partial(self.client.list_objects_v2, Bucket=self.bucket, Prefix=base, StartAfter=base + start, MaxKeys=_PAGE_KEYS)
            page = self._call("list blobs", _PAGE_BYTES, listing)
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

    # blobs -------------------------------------------------------------------------------

    def _read_object(self, what: str, key: str, byte_range: str | None = None, up_to: int | None = None) -> bytes | int:
        """The object's bytes (or a range of them), read whole: the answer within the deadline of
        a bodiless request, the body within that of its length. With ``up_to``, an object larger
        than that is not read: its size is returned instead."""
        extra = {"Range": byte_range} if byte_range else {}
        response = self._call(what, 0, lambda: self.client.get_object(Bucket=self.bucket, Key=key, **extra))
        body, size = response["Body"], int(response["ContentLength"])
        if up_to is not None and size > up_to:
            body.close()
            return size

        def read() -> bytes:
            try:
                return body.read()
            except _BODY_ERRORS as exc:  # botocore retried the request, not its body
                raise Transient(f"{type(exc).__name__}: {exc}") from None

        try:
            return self._call(what, size, read)
        finally:
            body.close()  # also ends an abandoned read

    def get_blob(self, digest: Digest, dest: FilePath) -> Digest:
        key, what = self._key("cas", digest), f"blob {digest}"

        def attempt() -> Digest:
            got = self._read_object(what, key, up_to=_PART)
            with HashingWriter(Path(dest)) as out:
                if isinstance(got, int):
                    self._get_parts(key, got, out, what)
                else:
                    out.write(got)
                return out.hexdigest()

        def give_up(reason: str, attempts: int) -> Exception:
            return RemoteUnavailable(f"{self.describe()}: {what}: {reason} (after {attempts} tries)")

        return call_with_retry(attempt, self.policy, give_up)

    def _get_parts(self, key: str, size: int, out: HashingWriter, what: str) -> None:
        """Ranged GETs of ``_PART`` bytes, ``part_concurrency`` at a time, written in order."""
        pending: deque[Future[bytes | int]] = deque()
        for offset in range(0, size, _PART):
            if len(pending) >= self.part_concurrency:
                out.write(self._waited(what, _PART, pending.popleft()))
            byte_range = f"bytes={offset}-{min(offset + _PART, size) - 1}"
            pending.append(self.watchdog.submit(partial(self._read_object, what, key, byte_range)))
        while pending:
            out.write(self._waited(what, _PART, pending.popleft()))
        if out.size != size:
            raise Transient(f"{size} bytes announced, {out.size} received")

    def put_blob(self, digest: Digest, source: Path) -> None:
        key, what = self._key("cas", digest), f"upload blob {digest}"
        try:
            size = os.path.getsize(source)
            data = Path(source).read_bytes() if size <= _PART else None
        except FileNotFoundError:
            raise RemoteError(f"{source}: local blob to upload is missing") from None
        if data is not None:
            self._call(what, size, lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data))
        else:
            self._put_parts(key, Path(source), size, what)

    def _put_parts(self, key: str, source: Path, size: int, what: str) -> None:
        """A multipart upload, ``part_concurrency`` parts at a time (each read by its own call,
        so an abandoned one holds no descriptor of ours); aborted unless it completes."""
        upload = self._call(what, 0, lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=key))["UploadId"]

        def put_part(number: int, offset: int) -> dict[str, Any]:
            with open(source, "rb") as handle:
                handle.seek(offset)
                data = handle.read(_PART)
            answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=data)
            return {"PartNumber": number, "ETag": answer["ETag"]}

        done: list[dict[str, Any]] = []
        pending: deque[Future[dict[str, Any]]] = deque()
        try:
            for number, offset in enumerate(range(0, size, _PART), start=1):
                if len(pending) >= self.part_concurrency:
                    done.append(self._waited(what, _PART, pending.popleft()))
                pending.append(self.watchdog.submit(partial(put_part, number, offset)))
            while pending:
                done.append(self._waited(what, _PART, pending.popleft()))
            self._complete(key, upload, done, size, what)
        except BaseException:
            self.watchdog.submit(lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload))
            raise

    def _complete(self, key: str, upload: str, parts: list[dict[str, Any]], size: int, what: str) -> None:
        """Complete a multipart upload. The server assembles the object before it answers,
        which takes time in proportion to its size: this one request gets the object's whole
        deadline as its read timeout. A completion that failed may have succeeded (an answer
        lost, a retry finding the upload gone): the object is looked for before giving up."""
        seconds = self.deadlines.for_bytes(size)
        with self._session_lock:
            patient = self._session.client("s3", endpoint_url=self.endpoint_url, config=self._config.merge(Config(read_timeout=seconds)))
        try:
            self._call(what, size, lambda: patient.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}))
        except RemoteError:
            try:
                head = self._call(what, 0, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
            except RemoteError:
                head = {}
            if head.get("ContentLength") != size:
                raise
        finally:
            patient.close()

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        return parallel_get(self.get_blob, digests, dest_for, self.parallel)

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        parallel_put(self.put_blob, blobs, self.parallel)

    # records -----------------------------------------------------------------------------

    def get_action(self, key: Digest, place: str) -> bytes | None:
        what = f"record {key}"
        try:
            data = self._read_object(what, f"{self.prefix}ac/{record_name(key, place)}", up_to=MAX_RECORD_BYTES)
        except NotFound:
            return None
        if isinstance(data, int):
            raise CorruptContent(f"{self.describe()}: record {key} is larger than {MAX_RECORD_BYTES} bytes")
        return data

    def put_action(self, key: Digest, place: str, data: bytes) -> None:
        name = f"{self.prefix}ac/{record_name(key, place)}"
        self._call(f"record {key}", len(data), lambda: self.client.put_object(Bucket=self.bucket, Key=name, Body=data))
