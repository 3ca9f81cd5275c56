"""Datasets exported from the store for training deterministic surrogates: one sample per built
target (prompt, seed, creative renders, finalized mesh and its renders, gates), written as
WebDataset shards with a manifest that links every sample to its build records."""
