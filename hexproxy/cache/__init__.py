"""The policy: fresh / stale / revalidate / fetch / verify, and what it hands out."""
