"""Keys: what a result is a function of (action descriptions, trees, recipe code,
machine facts) and the canonical bytes and digests they are hashed as."""
