"""Artifact kinds: one module per kind, discovered by the registry.

A kind module defines ``KIND: str``, ``SUFFIXES: tuple[str, ...]`` (lower case, with the dot)
and ``diff(a, b, *, name, assets) -> FileDiff`` where ``assets`` is an ``AssetSink`` or None.
``diff`` is only called when the bytes differ; it raises on input it cannot read, and the
registry then falls back to the binary kind with a note. Heavy imports stay inside functions.
"""
