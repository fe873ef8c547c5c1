"""What an entry held in memory costs, in bytes, so that one budget can bound it all.

Counting a registry file's body alone undercounts it several times over: its decoded
form (releases, dependencies, names) is Python objects, about 4-6 KB for a typical
package file of ~1 KB. Walking the objects to size them would cost as much as decoding
them, so each kind has a linear estimate, fitted with tracemalloc on CPython 3.11
(tests/unit/test_footprint.py checks each against tracemalloc, within a factor of 1.5).
"""

from __future__ import annotations

from ..installs import CsvLine
from ..registry import Names, Package, Versions

# Beyond the body: the entry, its Meta and key, its slot in the LRU table, and the answer
# the fast path pre-encodes and keeps on it (entries.Memo; about 600 bytes of headers).
ENTRY_OVERHEAD = 1024
# A stored file's record (path, checksum, its key) and its pre-encoded headers.
FILE_OVERHEAD = 1024

_PACKAGE = 300
_RELEASE = 270
_DEPENDENCY = 200
_NAME = 60  # plus the name's length
_VERSIONS_ENTRY = 170
_VERSION = 62
_CSV_LINE = 400


def decoded_size(decoded: object) -> int:
    """Estimated bytes of a decoded registry file or installs CSV (0 for raw files)."""
    if isinstance(decoded, Package):
        deps = sum(len(r.dependencies) for r in decoded.releases)
        return _PACKAGE + _RELEASE * len(decoded.releases) + _DEPENDENCY * deps
    if isinstance(decoded, Names):
        return _PACKAGE + sum(_NAME + len(name) for name in decoded.packages)
    if isinstance(decoded, Versions):
        versions = sum(len(p.versions) for p in decoded.packages)
        return _PACKAGE + _VERSIONS_ENTRY * len(decoded.packages) + _VERSION * versions
    if isinstance(decoded, list) and all(isinstance(line, CsvLine) for line in decoded):
        return _CSV_LINE * len(decoded)
    return 0
