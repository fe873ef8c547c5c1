"""The S3 backend's libraries are imported only when an S3 store is opened."""

from __future__ import annotations

import subprocess
import sys

from hexproxy.config import StoreConfig
from hexproxy.store.backends import open_s3


def test_the_command_line_and_server_do_not_import_botocore() -> None:
    # In a fresh interpreter: this one may have imported it for other tests.
    code = (
        "import sys, hexproxy.cli, hexproxy.web.app\n"
        "s3 = ('aiobotocore', 'botocore')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in s3)\n"
        "print(' '.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""


def test_opening_an_s3_store_gives_the_s3_backend() -> None:
    store = open_s3(StoreConfig(kind="s3", bucket="b", endpoint_url="http://127.0.0.1:9"))
    assert type(store).__module__ == "hexproxy.store.s3"
    assert store.location.startswith("s3://b/")
