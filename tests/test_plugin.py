"""The pytest plugin, tested as its users run it: in a fresh pytest session via `pytester`."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests  # noqa: F401 - imported up front, like forge.testing below

# Import the heavy modules here: pytester forgets modules first imported inside an
# in-process run, and a second run would then mix two copies of flask and requests.
import forge.testing  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

CLONE_TEST = '''
import subprocess

def test_clone_with_job_token(forge, tmp_path):
    forge.create_group("acme")
    bob = forge.create_user("bob")
    app = forge.create_project("acme/app", files={"README.md": "hi\\n"}, members={"bob": "developer"})
    job = forge.start_job(app, bob)
    assert job.variables["CI_PROJECT_PATH"] == "acme/app"
    subprocess.run(["git", "clone", "-q", job.variables["CI_REPOSITORY_URL"], str(tmp_path / "c")],
                   check=True, env={"GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path)})
    assert (tmp_path / "c" / "README.md").read_text() == "hi\\n"
    forge.finish_job(job)
    env = {"GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path)}
    result = subprocess.run(["git", "clone", job.variables["CI_REPOSITORY_URL"], str(tmp_path / "d")],
                            capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert forge.last_event(credential="job_token")["reason"] == "job_not_running"
'''


def test_plugin_forge_fixture_serves_real_git(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CLONE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_plugin_resets_between_tests_without_restarting(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        URLS = []

        def test_one(forge):
            URLS.append(forge.url)
            forge.create_group("acme")
            forge.create_project("acme/app")
            forge.create_user("bob")

        def test_two(forge):
            URLS.append(forge.url)
            assert URLS[0] == URLS[1]
            assert forge.events() == []
            forge.create_group("acme")       # would conflict if test_one's data were left
            forge.create_project("acme/app")
            forge.create_user("bob")
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_plugin_server_exception_fails_the_test_that_caused_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import requests

        def test_breaks_the_server(forge, monkeypatch):
            forge.create_group("acme")
            forge.create_project("acme/site", visibility="public")
            def boom(path):
                raise RuntimeError("disk on fire")
            monkeypatch.setattr(forge.state.backend, "path_for", boom)
            response = requests.get(forge.url + "/acme/site.git/info/refs?service=git-upload-pack")
            assert response.status_code == 500

        def test_next_one_is_fine(forge):
            assert forge.state.errors == []
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_breaks_the_server*",
        "*the forge server raised during this test*",
        "*RuntimeError: disk on fire*",
    ])


SEED = """
users:
  - {username: alice, tokens: [{name: t, token: glpat-from-seed-00000001}]}
groups:
  - {path: acme, members: {alice: owner}}
projects:
  - {path: acme/app, files: {f: "1"}}
"""

SEED_TEST = '''
import requests

def test_seeded(forge):
    response = requests.get(forge.url + "/acme/app.git/info/refs?service=git-upload-pack",
                            auth=("oauth2", "glpat-from-seed-00000001"))
    assert response.status_code == 200

def test_seeded_again_after_reset(forge):
    test_seeded(forge)
'''


@pytest.mark.parametrize("how", ["flag", "ini"])
def test_plugin_seed_option_as_flag_and_ini(pytester: pytest.Pytester, how: str) -> None:
    pytester.makefile(".yml", scenario=SEED)
    pytester.makepyfile(SEED_TEST)
    if how == "ini":
        pytester.makeini("[pytest]\nforge_seed = scenario.yml\n")
        result = pytester.runpytest("-p", "no:cacheprovider")
    else:
        result = pytester.runpytest("-p", "no:cacheprovider", "--forge-seed", "scenario.yml")
    result.assert_outcomes(passed=2)


def test_plugin_help_lists_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--forge-seed*", "*forge_seed*"])


def test_plugin_one_server_per_xdist_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import os, pathlib

        def test_records_its_server(forge):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            (pathlib.Path(os.environ["URLS_DIR"]) / worker).write_text(forge.url)
            forge.create_group("acme")  # each worker has its own, empty forge
            forge.create_project("acme/app")
    ''')
    urls_dir = pytester.mkdir("urls")
    pytester._monkeypatch.setenv("URLS_DIR", str(urls_dir))
    # --dist each runs the test on every worker, so both workers are surely used
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    urls = {path.name: path.read_text() for path in urls_dir.iterdir()}
    assert set(urls) == {"gw0", "gw1"}
    assert urls["gw0"] != urls["gw1"]


def test_plugin_factory_makes_independent_forges(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        def test_two_forges(forge, forge_factory):
            other = forge_factory()
            assert other.url != forge.url
            other.create_user("bob")
            forge.create_user("bob")  # no clash: separate databases
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_plugin_seed_templates_are_read_next_to_the_seed_file_only(pytester: pytest.Pytester) -> None:
    pytester.mkdir("seeds")
    pytester.mkdir("seeds/app")
    (pytester.path / "seeds" / "app" / "main.py").write_text("print('hi')\n")
    (pytester.path / "seeds" / "scenario.yml").write_text(
        "groups: [{path: acme}]\nprojects: [{path: acme/app, template: app}]\n")
    (pytester.path / "seeds" / "escape.yml").write_text(
        "groups: [{path: acme}]\nprojects: [{path: acme/app, template: ../seeds/app}]\n")
    pytester.makepyfile('''
        import pytest
        from forge.datadir import DataDirBusy, DataDirLock

        def test_seeded(forge):
            assert forge.state.backend.resolve(1, "main")
            with pytest.raises(DataDirBusy):
                DataDirLock.acquire(forge.state.config.data_dir)
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider", "--forge-seed", "seeds/scenario.yml")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:cacheprovider", "--forge-seed", "seeds/escape.yml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*projects[[]0[]] (acme/app).template: '../seeds/app' must not "
                                 "contain '..'*"])


def test_fixture_finds_its_own_users_and_jobs_by_name_and_id(forge, git) -> None:
    """Secrets live only as digests in the forge: the fixture remembers the handles it gave
    out, so names and ids work where handles do, and anything else is a clear LookupError."""
    forge.create_group("acme")
    bob = forge.create_user("bob")
    forge.create_project("acme/app", files={"a.txt": "a\n"}, members={"bob": "developer"})
    job = forge.start_job("acme/app", "bob")
    assert forge.clone_url("acme/app", user="BOB") == forge.clone_url("acme/app", user=bob)
    assert "bob:bob-pass-1@" in forge.clone_url("acme/app", user="bob", password=True)
    assert forge.clone_url("acme/app", job=job.id) == forge.clone_url("acme/app", job=job)
    assert forge.job_variables(job.id)["CI_JOB_TOKEN"] == job.token
    assert git("ls-remote", forge.clone_url("acme/app", job=job.id)).returncode == 0
    with pytest.raises(LookupError, match="no user 'carol' was created"):
        forge.clone_url("acme/app", user="carol")
    with pytest.raises(LookupError, match="job 99 was not started"):
        forge.job_variables(99)
    expired = forge.create_token("bob", ["api"], expires_at="2020-01-01")
    refused = requests.get(f"{forge.url}/api/v4/user", headers={"PRIVATE-TOKEN": expired})
    assert refused.status_code == 401
