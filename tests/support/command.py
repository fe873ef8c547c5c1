"""Running a real client (rebar3, mix) as a subprocess with a bound on its time."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CommandResult:
    """What one client command did."""

    tool: str
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        """A readable report for assertion messages."""
        return (
            f"{self.tool} {' '.join(self.args)} -> {self.returncode} in {self.elapsed:.1f}s\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


async def run_command(
    tool: str, args: tuple[str, ...], *, cwd: Path, env: dict[str, str], limit: float
) -> CommandResult:
    """Run ``tool ARGS``; kill it and raise TimeoutError (with its output) after ``limit`` s."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        tool,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        result = CommandResult(
            tool, args, -9, out.decode(errors="replace"), err.decode(errors="replace"),
            time.monotonic() - started,
        )  # fmt: skip
        raise TimeoutError(f"{tool} timed out after {limit:.0f}s\n{result}") from None
    return CommandResult(
        tool=tool,
        args=args,
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        elapsed=time.monotonic() - started,
    )
