"""Ed25519 signatures on action results, so a shared cache can be written by anyone but only
records from keys the user trusts are used.

A remote keeps each signer's records in a place of their own, named by the signing key's id
(:func:`key_id`: ``ac/<key id>/<action key>``), and a client reads only the places of the keys it
trusts and writes only into the place of the key that signed what it writes: nothing a client
without that key writes can displace a signed record.

Key files (in the keys dir, see :func:`buildsys.project.config.keys_dir`)::

    <name>.key   "<name>:<base64 32-byte private seed>\n", mode 0600
    <name>.pub   "<name>:<base64 32-byte public key>\n"

A signature is ``{"key": name, "sig": base64}`` over ``DOMAIN + ActionResult.encode()``: the
result's canonical bytes (which include the action key, so a record cannot be replayed under
another key) behind a domain-separation prefix (so no other buildsys message can pass for a
record). A hand-off bundle's is over ``BUNDLE_DOMAIN`` and its lock's bytes. Keys carry names so they can rotate: trust the new name, then drop the old one.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Mapping

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from buildsys.errors import BuildsysError
from buildsys.keys.encoding import EncodingError
from buildsys.project.config import KEY_NAME
from buildsys.store.records import ActionRecord, ActionResult

DOMAIN = b"buildsys action result v1\x00"
BUNDLE_DOMAIN = b"buildsys hand-off lock v1\x00"
"""Hand-off bundles are signed over this prefix and their lock's bytes (the lock lists every
file of the bundle with its digest, so the signature covers them all)."""


class SigningError(BuildsysError):
    """A key file or key name is unusable; the message names the file."""


class Verdict(Enum):
    """What signature checking says about a record."""

    OK = "ok"
    UNSIGNED = "unsigned"
    UNTRUSTED = "untrusted key"
    BAD_SIGNATURE = "bad signature"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME.match(name):
        raise SigningError(f"{name!r} is not a key name (letters, digits, . _ -, at most 64)")
    return name


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The name of a key's place on a remote: 128 bits of the BLAKE3 of its public bytes, hex
    (names are chosen by people and may collide; ids are not)."""
    return blake3.blake3(_raw_public(key)).hexdigest()[:32]


def public_key_line(name: str, key: Ed25519PublicKey) -> str:
    return f"{name}:{base64.b64encode(_raw_public(key)).decode()}"


def generate_key(name: str, keys_dir: Path) -> str:
    """Create ``<keys_dir>/<name>.key`` (0600, never overwritten) and ``<name>.pub``; return
    the public key as ``name:base64`` for other machines' ``[trust] keys``."""
    _check_name(name)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    path = keys_dir / f"{name}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path}: key {name!r} already exists (pick a new name to rotate)") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{name}:{base64.b64encode(seed).decode()}\n")
        handle.flush()
        os.fsync(handle.fileno())
    line = public_key_line(name, private.public_key())
    (keys_dir / f"{name}.pub").write_text(line + "\n")
    return line


def parse_public_key(value: str, where: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(value, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise SigningError(f"{where}: not a base64 Ed25519 public key (32 bytes)") from None


@dataclass(frozen=True)
class Signer:
    """Signs results with one named private key."""

    name: str
    private: Ed25519PrivateKey

    @classmethod
    def load(cls, name: str, keys_dir: Path) -> "Signer":
        _check_name(name)
        path = keys_dir / f"{name}.key"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise SigningError(f"{path}: signing key {name!r} not found (buildsys keys generate {name})") from None
        except OSError as exc:
            raise SigningError(f"{path}: cannot read signing key ({exc})") from None
        found, _, b64 = text.partition(":")
        if found != name:
            raise SigningError(f"{path}: file holds key {found!r}, expected {name!r}")
        try:
            private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(b64, validate=True))
        except (ValueError, binascii.Error):
            raise SigningError(f"{path}: not an Ed25519 private key") from None
        if os.stat(path).st_mode & 0o077:
            raise SigningError(f"{path}: private key is readable by others (chmod 600 it)")
        return cls(name, private)

    def public_line(self) -> str:
        return public_key_line(self.name, self.private.public_key())

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    def sign(self, result: ActionResult) -> dict[str, str]:
        return self.sign_message(DOMAIN + result.encode())

    def sign_message(self, message: bytes) -> dict[str, str]:
        """``{"key": name, "sig": base64}`` over ``message`` (which starts with its domain)."""
        return {"key": self.name, "sig": base64.b64encode(self.private.sign(message)).decode()}


class TrustedKeys:
    """The public keys whose signatures make a remote record usable, by key name."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self.keys: dict[str, Ed25519PublicKey] = dict(keys or {})

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], where: str = "[trust] keys") -> "TrustedKeys":
        return cls({name: parse_public_key(value, f"{where}.{name}") for name, value in mapping.items()})

    def add(self, name: str, key: Ed25519PublicKey) -> None:
        self.keys[_check_name(name)] = key

    def __len__(self) -> int:
        return len(self.keys)

    def ids(self) -> dict[str, str]:
        """Key id -> key name, of every trusted key."""
        return {key_id(key): name for name, key in self.keys.items()}

    def verify(self, record: ActionRecord) -> Verdict:
        """Whether the key the record's signature names is trusted and signed it."""
        sig = record.signature
        if sig is None:
            return Verdict.UNSIGNED
        name = sig.get("key")
        if not isinstance(name, str):
            return Verdict.BAD_SIGNATURE
        key = self.keys.get(name)
        if key is None:
            return Verdict.UNTRUSTED
        return _check(key, sig, _signed_bytes(record))

    def verify_in_place(self, record: ActionRecord, place: str) -> Verdict:
        """Whether the record found in the place of the key with id ``place`` was signed by that
        key (whatever name its signature gives)."""
        key = next((k for k in self.keys.values() if key_id(k) == place), None)
        if key is None:
            return Verdict.UNTRUSTED
        if record.signature is None:
            return Verdict.UNSIGNED
        return _check(key, record.signature, _signed_bytes(record))

    def verify_message(self, signature: object, message: bytes) -> tuple[Verdict, str | None]:
        """(verdict, the signing key's name) of a detached ``{"key", "sig"}`` over ``message``;
        UNSIGNED for no signature (None)."""
        if signature is None:
            return Verdict.UNSIGNED, None
        name = signature.get("key") if isinstance(signature, dict) else None
        if not isinstance(name, str):
            return Verdict.BAD_SIGNATURE, None
        key = self.keys.get(name)
        if key is None:
            return Verdict.UNTRUSTED, name
        assert isinstance(signature, dict)
        return _check(key, signature, message), name


def _signed_bytes(record: ActionRecord) -> bytes | None:
    """What a record's signature covers; None for a result with no canonical bytes (an inf, a
    bytes map key: decoded from a remote, never signed by anyone)."""
    try:
        return DOMAIN + record.result.encode()
    except EncodingError:
        return None


def _check(key: Ed25519PublicKey, signature: dict, message: bytes | None) -> Verdict:
    raw = signature.get("sig")
    if not isinstance(raw, str) or message is None:
        return Verdict.BAD_SIGNATURE
    try:
        key.verify(base64.b64decode(raw, validate=True), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return Verdict.BAD_SIGNATURE
    return Verdict.OK
