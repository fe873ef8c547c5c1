"""Air-gap tools: warm the cache, resolve what to warm, lock files, bundle export/import."""
