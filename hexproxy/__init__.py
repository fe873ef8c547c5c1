"""hexproxy: a verifying, caching pull-through proxy of repo.hex.pm."""

__version__ = "0.1.0"
__all__ = ["__version__"]
