"""kill -9 in the middle of publishing: the hosted registry is the old or the new one.

A child process publishes release after release into a hosted repository as fast as it
can; the test kills it with SIGKILL at some moment mid-stream, several times, and after
each kill checks what a client would see: every registry file verifies, ``names`` and
``versions`` agree with the package file, every listed release's tarball is there with
its signed checksum, no release confirmed before the kill is lost, and the next publish
works (the lock died with the process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hexproxy.hosted import Hosted
from tests.support.fixtures import REPO_ROOT
from tests.support.hosted import hosted_config, package_tarball

CHILD = """
import sys
from pathlib import Path
from tests.support.hosted import hosted_config, package_tarball
from hexproxy.hosted import Hosted

hosted = Hosted.open(hosted_config(Path(sys.argv[1])))
start = int(sys.argv[2])
for i in range(start, start + 10_000):
    hosted.publish("acme", package_tarball("acme_core", f"1.{i}.0"), replace=False)
    print(i, flush=True)
"""


def check_consistent(hosted: Hosted) -> set[str]:
    repo = hosted.repo("acme")
    assert [p for p in repo.verify() if not p.orphan] == []
    listed = {v for e in repo.versions().packages for v in e.versions}
    package = repo.package("acme_core")
    released = {r.version for r in package.releases} if package else set()
    assert listed == released
    return listed


def test_kill_9_during_publishes_leaves_a_valid_registry(tmp_path: Path) -> None:
    config = hosted_config(tmp_path)
    confirmed: set[str] = set()
    start = 0
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(start)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            # Let it confirm a few publishes (more each round), then kill it mid-stream.
            for _ in range(3 + round_):
                line = child.stdout.readline()
                assert line, "the publisher stopped early"
                confirmed.add(f"1.{int(line)}.0")
                start = int(line) + 1
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
            if child.stdout is not None:
                child.stdout.close()
        start += 1  # the release being written may or may not have landed
        listed = check_consistent(Hosted.open(config))
        assert confirmed <= listed
    hosted = Hosted.open(config)
    hosted.publish("acme", package_tarball("acme_core", "9.0.0"), replace=False)
    assert "9.0.0" in check_consistent(hosted)
