"""The S3 remote (``s3://bucket/prefix``), for AWS S3 and S3-compatible servers (minio, moto).

Layout under the prefix::

    <prefix>/cas/<digest>   blobs
    <prefix>/ac/<key>       action records

Blobs move with boto3's managed transfers (``upload_file`` / ``download_file``): streamed from
and to files, multipart above 16 MiB in 16 MiB parts, so memory stays bounded. Credentials
come from the usual boto3 chain (env, ~/.aws, instance role) unless the settings name them
(``username`` = access key id, ``password_env`` = env var holding the secret key). Retries and
timeouts are botocore's (standard mode), sized from the same settings as the HTTP remote.
The bucket must exist; it is never created here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from buildsys.hashing import Digest
from buildsys.remote.base import MAX_RECORD_BYTES, CorruptContent, NotFound, RemoteError, RemoteRefused, RemoteUnavailable, check_name, parallel_has

_PART = 16 << 20


class S3Remote:
    """A remote in an S3 bucket."""

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

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        return parallel_has(lambda d: self._exists(self._key("cas", d), f"blob {d}"), digests, self.parallel)

    def get_blob(self, digest: Digest, dest: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key("cas", digest), str(dest), Config=self.transfer)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._error(exc, f"blob {digest}") from None

    def put_blob(self, digest: Digest, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._key("cas", digest), Config=self.transfer)
        except FileNotFoundError:
            raise RemoteError(f"{source}: local blob to upload is missing") from None
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            cause = (exc.__cause__ or exc.__context__) if isinstance(exc, Boto3Error) else exc
            if isinstance(cause, (ClientError, BotoCoreError)):
                raise self._error(cause, f"upload blob {digest}") from None
            raise RemoteUnavailable(f"{self.describe()}: upload blob {digest}: {exc}") from None

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
