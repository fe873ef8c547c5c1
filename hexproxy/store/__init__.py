"""The cache on disk: keys, atomic storage, inventory, audit and eviction."""
