"""Talking to upstream: the HTTP client, its circuit breaker, the shared download."""
