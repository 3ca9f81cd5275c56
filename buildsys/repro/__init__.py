"""Reproducibility: verify (replay and compare bitwise), diff two builds, hand-off bundles."""
