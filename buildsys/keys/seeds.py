"""Seed derivation: one integer seed per (action seed, stage, stream), stable on every machine."""

from __future__ import annotations

import blake3

from buildsys.keys.encoding import canonical_bytes

SEED_BITS = 63


def derive_seed(seed: int, *names: str) -> int:
    """A non-negative 63-bit seed from the action's seed and a path of names.

    BLAKE3 over the canonical encoding, so the value does not depend on Python's hash seed,
    the platform's integer width or the order streams are asked for.
    """
    digest = blake3.blake3(canonical_bytes(["buildsys-seed-v1", seed, list(names)])).digest(8)
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)
