"""The README's control-API and CLI sequences work as pasted, in order, after `make serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from serving import ROOT, Served

README = (ROOT / "README.md").read_text()


def _block(heading: str, after: str = "") -> str:
    """The first ```sh block below `heading` (and below the text `after`, if given)."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    section = section.split(after, 1)[1] if after else section
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, heading
    return match.group(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`forge serve` started the way `make serve` starts it (see the Makefile).

    Shared by this module's tests: each begins with a reset, as the README does.
    """
    makefile = (ROOT / "Makefile").read_text()
    assert "forge serve --fresh --host $(HOST) --port $(PORT) --data-dir $(DEMO_DATA) " \
           "--seed fixtures/demo.yml" in makefile
    server = Served(tmp_path_factory.mktemp("make-serve") / "demo", "--fresh", "--seed",
                    "fixtures/demo.yml")
    yield server
    server.stop()


def _paste(script: str, demo: Served, tmp_path: Path, git_env: dict[str, str]
           ) -> subprocess.CompletedProcess[str]:
    """Run pasted commands in a shell in the checkout, against `demo`, stopping at a failure."""
    script = (script.replace("http://127.0.0.1:8929", demo.url)
              .replace(".forge-data/demo", str(demo.log.parent / "demo"))
              .replace("/tmp/forge-clones", str(tmp_path / "clones"))
              .replace("/tmp/forge-registry", str(tmp_path / "registry"))
              .replace("/tmp/forge-runner", str(tmp_path / "runner")))
    env = {**git_env, "PATH": f"{Path(sys.executable).parent}:{git_env['PATH']}"}
    # curl -s prints 4xx bodies and exits 0: make any HTTP error stop the paste
    prelude = "set -eo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n"
    return subprocess.run(["bash", "-c", prelude + script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_readme_control_api_and_cli_sequences_work_after_make_serve(
        demo: Served, tmp_path: Path, git_env: dict[str, str]) -> None:
    script = _block("The control API")
    assert script.count("curl ") == 9
    result = _paste(script, demo, tmp_path, git_env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    reset, seeded, started, shown, finished, member, allowed, refused, health = lines
    assert reset == {"status": "reset"}
    assert set(seeded["projects"]) == {"acme/website", "acme/handbook", "acme/platform/lib",
                                       "acme/app", "acme/platform/tools", "acme/secret"}
    assert started["status"] == "running" and started["token"].startswith("glcbt-")
    assert (shown["id"], shown["status"]) == (1, "running")
    assert (finished["id"], finished["status"]) == (1, "success")
    assert member == {"user": "eve", "target": "acme/secret", "access_level": 20}
    assert allowed == {"project": "acme/secret"}
    assert isinstance(refused, list) and health == {"status": "ok"}
    lib = requests.get(f"{demo.url}/api/v4/projects/acme%2Fplatform%2Flib/repository/files/"
                       "lib.py/raw", params={"ref": "main"},
                       headers={"PRIVATE-TOKEN": demo.root_token})
    assert lib.status_code == 200 and lib.content == (ROOT / "fixtures/templates/lib/lib.py").read_bytes()

    result = _paste(_block("The CLI", after="Against the forge of `make serve`"), demo, tmp_path,
                    git_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "clones" / "app" / "README.md").exists()
    assert re.search(r"job \d+ is success", result.stdout)
    assert "version: 0.1" in (tmp_path / "registry" / "config.yml").read_text()
    seeded = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert [job["token"] for job in seeded["jobs"]] == ["glcbt-64_demoRunningJob00001",
                                                        "glcbt-64_demoFinishedJob0001"]


def test_readme_run_real_jobs_sequence_runs_a_job_on_a_real_runner(
        demo: Served, tmp_path: Path, git_env: dict[str, str]) -> None:
    script = _block("Run real jobs")
    assert "gitlab-runner.py --register" in script and "--once" in script
    reset = f"forge seed --reset --url {demo.url} --token {demo.root_token} fixtures/demo.yml >/dev/null\n"
    result = _paste(reset + script, demo, tmp_path, git_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^job \d+ is success$", result.stderr, re.M), result.stderr
    log = result.stdout
    assert re.search(r"^acme/app at [0-9a-f]{8} on main$", log, re.M), log
    assert "Cloning into 'lib'" in log and "lib.py" in log
    assert log.count("Job complete success=True") == 2  # forge job log, then the API
    assert "Registration complete" in result.stdout + result.stderr


def test_seed_command_seeds_the_demo_with_templates_after_a_reset(
        demo: Served, tmp_path: Path, git_env: dict[str, str]) -> None:
    script = (f"forge seed --url {demo.url} --token {demo.root_token} fixtures/demo.yml 2>&1 || true\n"
              f"forge seed --reset --url {demo.url} --token {demo.root_token} fixtures/demo.yml\n")
    result = _paste(script, demo, tmp_path, git_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Error: 400: users[0] (alice): user 'alice' already exists\n")
    assert '"acme/platform/lib"' in result.stdout


def test_serve_prints_whole_expectations(demo: Served) -> None:
    comments = [line for line in demo.lines if line.startswith("# ") and "expect: " in line]
    refusals = [line for line in comments if "expect: clones" not in line]
    assert refusals and all(not line.endswith(" ") for line in refusals)
    dead_job = next(line for line in refusals if "(job_not_running)" in line)
    assert dead_job.endswith(f"{demo.url}/help/topics/git/troubleshooting_git.md"
                             "#error-on-git-fetch-http-basic-access-denied")
    assert any(line.endswith("Authentication by CI/CD job token not allowed from app to "
                             "project #6.") for line in refusals)


def test_readme_documents_every_seed_key_and_create_project_argument() -> None:
    import inspect

    from forge import seed
    from forge.testing import Forge

    section = README.split("\n## Seed scenarios\n", 1)[1].split("\n## ", 1)[0]
    keys = set().union(seed.TOP_KEYS, seed.USER_KEYS, seed.TOKEN_KEYS, seed.GROUP_KEYS,
                       seed.PROJECT_KEYS, seed.BRANCH_KEYS, seed.SCOPE_KEYS, seed.ALLOWLIST_KEYS,
                       seed.ENTRY_KEYS, seed.JOB_KEYS) - {"name"}
    assert sorted(k for k in keys if not re.search(rf"\b{k}:", section)) == []
    row = next(line for line in README.splitlines() if line.startswith("| `create_project("))
    arguments = set(inspect.signature(Forge.create_project).parameters) - {"self", "path"}
    assert sorted(a for a in arguments if f"{a}=" not in row) == []


def test_readme_pytest_examples_pass_as_pasted(tmp_path: Path) -> None:
    """Each ```python block of the README that defines a test, alone in a file, passes
    with the installed plugin (a new pytest, as in another project)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "\ndef test_" in f"\n{b}"]
    assert len(blocks) >= 3
    for number, block in enumerate(blocks):
        (tmp_path / f"test_readme_{number}.py").write_text(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "FORGE_TEST_"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-W", "error::pytest.PytestUnknownMarkWarning", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(blocks)} passed" in result.stdout, result.stdout[-2000:]
