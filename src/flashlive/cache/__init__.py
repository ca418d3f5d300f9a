"""Context caching: the cachedContents registry (and, beside it, the KV prefix states)."""
