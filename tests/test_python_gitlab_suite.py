"""python-gitlab's own functional tests, for the areas forge claims, pass against a fresh forge.

Runs `scripts/python-gitlab-suite.sh` (about 30 s once the pinned sdist is cached in
`.forge-data/python-gitlab-suite`); skipped when the sdist cannot be downloaded, except
under CI, where that fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forge.plugin import ci_forbids_skips

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "python-gitlab-suite.sh"


def test_python_gitlab_functional_suite_passes(pytestconfig: pytest.Config) -> None:
    from forge.pgcluster import create_database, drop_database
    from forge.plugin import postgres_admin_url

    work = ROOT / ".forge-data" / "python-gitlab-suite"
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(work)}
    admin_url = postgres_admin_url(pytestconfig)  # the run's database: its `forge serve` uses it too
    if admin_url:
        env["FORGE_DATABASE_URL"] = create_database(admin_url)
    try:
        result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600, env=env)
    finally:
        if admin_url:
            drop_database(admin_url, env["FORGE_DATABASE_URL"])
    if not list(work.glob("python_gitlab-*/tests/functional/api")):
        if ci_forbids_skips():
            pytest.fail(f"python-gitlab's sdist could not be downloaded: {result.stderr[-500:]}")
        pytest.skip(f"python-gitlab's sdist could not be downloaded: {result.stderr[-500:]}")
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary.endswith("not claimed by forge, see README.md)") and ", 0 failed" in summary, summary
    passed = int(summary.split()[0])
    assert passed >= 66, summary
