"""Start `forge serve` as a user does, in a subprocess, and read what it printed (as tests/test_cli.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORGE = shutil.which("forge", path=str(Path(sys.executable).parent)) or "forge"
DEMO = ROOT / "fixtures" / "demo.yml"


class Served:
    """A `forge serve` process and what it printed before serving."""

    def __init__(self, data_dir: Path, *args: str, cwd: Path = ROOT) -> None:
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"
        with self.log.open("ab") as log:  # a file, not a pipe nobody reads: it never blocks
            self.proc = subprocess.Popen(
                [FORGE, "serve", "--port", "0", "--data-dir", str(data_dir), "--quiet", *args],
                stdout=subprocess.PIPE, stderr=log, text=True, cwd=cwd)
        assert self.proc.stdout is not None
        self.lines = [self.proc.stdout.readline().rstrip("\n")]
        match = re.fullmatch(r"forge listening on (http://(?:127\.0\.0\.1|\[::1\]):\d+)", self.lines[0])
        assert match, self.lines[0] + self.log.read_text()
        self.url = match.group(1)
        self.lines.append(self.proc.stdout.readline().rstrip("\n"))
        self.root_token = self.lines[1].split()[2]
        if "--seed" in args:
            while not self.lines[-1].startswith(("curl ", "seed: ")):
                line = self.proc.stdout.readline()
                assert line, "forge serve ended early: " + self.log.read_text()
                self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
