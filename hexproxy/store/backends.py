"""The object store a configuration names, imported only when one is named.

The S3 backend stands on aiobotocore and botocore, about a fifth of a second of
imports: a server or a ``hexproxy cache stats`` on a local cache directory must
not pay it. So the backend module is looked up by name here, the one place that
does so, and imported the first time an S3 store is opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..config import StoreConfig

if TYPE_CHECKING:
    from .s3 import S3Store

# kind -> the module that holds its class (both inside this package, so the import
# still points the way tests/unit/test_layering.py wants).
_S3_MODULE = "hexproxy.store.s3"


def open_s3(config: StoreConfig) -> S3Store:
    """An S3-compatible store for ``config`` (no connection yet: it connects on first use)."""
    module = importlib.import_module(_S3_MODULE)
    store: S3Store = module.S3Store(config)
    return store
