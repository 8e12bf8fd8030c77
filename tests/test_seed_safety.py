"""Seeds read only what they may, refuse bad values with 400 naming the entry, and echo no secret."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from serving import FORGE, Served

from forge.seed import MAX_JOB_TIMEOUT, NO_TEMPLATES_DIR
from forge.templates import MAX_BYTES, MAX_FILES
from forge.testing import Forge

GROUP = {"users": [{"username": "bob"}], "groups": [{"path": "g", "members": {"bob": "developer"}}]}


@pytest.fixture
def templates(forge: Forge, tmp_path: Path) -> Iterator[Path]:
    """The forge's templates directory, as `forge serve --templates-dir` sets it."""
    root = tmp_path / "templates"
    (root / "app" / "src").mkdir(parents=True)
    (root / "app" / "README.md").write_text("# app\n")
    (root / "app" / "src" / "main.py").write_bytes(b"print('hi')\n")
    (root / "app" / ".git").mkdir()
    (root / "app" / ".git" / "config").write_text("[core]\n")
    config = forge.state.config
    forge.state.config = config.replace(templates_dir=str(root))
    yield root
    forge.state.config = config


def _seed(api: requests.Session, forge: Forge, scenario: Any) -> requests.Response:
    return api.post(f"{forge.url}/-/forge/seed", json=scenario)


def _project(template: Any = None, **keys: Any) -> dict[str, Any]:
    project = {"path": "g/app", **keys}
    if template is not None:
        project["template"] = template
    return {**GROUP, "projects": [project]}


def _refused(forge: Forge, response: requests.Response, message: str) -> None:
    assert (response.status_code, response.json()) == (400, {"message": message})
    assert not list(forge.state.backend.root.iterdir())  # nothing left behind


# -- templates -------------------------------------------------------------------------

def test_seed_template_refused_without_a_templates_dir(forge: Forge, api: requests.Session) -> None:
    _refused(forge, _seed(api, forge, _project("/etc")),
             f"projects[0] (g/app).template: {NO_TEMPLATES_DIR}")


def test_seed_template_reads_below_the_templates_dir(forge: Forge, api: requests.Session,
                                                     templates: Path) -> None:
    response = _seed(api, forge, _project("app", files={"extra.txt": "x\n"}))
    assert response.status_code == 201, response.text
    head = forge.state.backend.resolve(response.json()["projects"]["g/app"], "main")
    assert head
    with forge.app.app_context():
        from forge.repos import open_repo
        repo = open_repo(forge.state.backend.path_for(response.json()["projects"]["g/app"]))
        tree = repo[repo[head.encode()].tree]
        assert sorted(name.decode() for name, _, _ in tree.iteritems()) == [
            "README.md", "extra.txt", "src"]


@pytest.mark.parametrize("template,message", [
    ("/etc", "'/etc' must be relative to the templates directory"),
    ("../../../../etc", "'../../../../etc' must not contain '..'"),
    ("app/../..", "'app/../..' must not contain '..'"),
    ("~root", "'~root' must be relative to the templates directory"),
    ("missing", "'missing' is not a directory in the templates directory"),
    (["app"], "expected the name of a directory"),
])
def test_seed_template_cannot_leave_the_templates_dir(
        forge: Forge, api: requests.Session, templates: Path, template: Any, message: str) -> None:
    _refused(forge, _seed(api, forge, _project(template)), f"projects[0] (g/app).template: {message}")


def test_seed_template_refuses_symbolic_links(forge: Forge, api: requests.Session,
                                              templates: Path) -> None:
    (templates / "etc").symlink_to("/etc")
    _refused(forge, _seed(api, forge, _project("etc")),
             "projects[0] (g/app).template: 'etc' leads out of the templates directory "
             "(a symbolic link)")
    (templates / "app" / "src" / "shadow").symlink_to("/etc/shadow")
    _refused(forge, _seed(api, forge, _project("app")),
             "projects[0] (g/app).template: 'app': 'src/shadow' is a symbolic link; "
             "templates hold regular files and directories only")
    (templates / "app" / "src" / "shadow").unlink()
    (templates / "app" / "etc").symlink_to("/etc", target_is_directory=True)
    _refused(forge, _seed(api, forge, _project("app")),
             "projects[0] (g/app).template: 'app': 'etc' is a symbolic link; "
             "templates hold regular files and directories only")


def test_seed_template_refuses_special_files(forge: Forge, api: requests.Session,
                                             templates: Path) -> None:
    os.mkfifo(templates / "app" / "pipe")  # reading it would block forever
    _refused(forge, _seed(api, forge, _project("app")),
             "projects[0] (g/app).template: 'app': 'pipe' is not a regular file")


def test_seed_template_is_bounded_in_files_and_bytes(forge: Forge, api: requests.Session,
                                                     templates: Path) -> None:
    many = templates / "many"
    many.mkdir()
    for i in range(MAX_FILES + 1):
        (many / f"f{i:04}").write_bytes(b"")
    started = time.monotonic()
    _refused(forge, _seed(api, forge, _project("many")),
             f"projects[0] (g/app).template: 'many' holds more than {MAX_FILES} files")
    big = templates / "big"
    big.mkdir()
    with (big / "huge.bin").open("wb") as handle:
        handle.truncate(MAX_BYTES + 1)  # sparse: refused by its size, before it is read
    _refused(forge, _seed(api, forge, _project("big")),
             f"projects[0] (g/app).template: 'big' holds more than {MAX_BYTES} bytes")
    assert time.monotonic() - started < 10


def test_fixture_seed_file_reads_templates_next_to_it(forge: Forge, tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "a.txt").write_text("a\n")
    scenario = tmp_path / "s.yml"
    scenario.write_text(yaml.safe_dump({**GROUP, "projects": [{"path": "g/app", "template": "tpl"}]}))
    assert "g/app" in forge.seed(scenario)["projects"]
    forge.reset()
    scenario.write_text(yaml.safe_dump({**GROUP, "projects": [{"path": "g/app", "template": "/etc"}]}))
    with pytest.raises(Exception, match=r"projects\[0\] \(g/app\)\.template: '/etc' must be "
                                        "relative to the templates directory"):
        forge.seed(scenario)


def test_seed_command_sends_templates_inline_to_a_server_without_templates(tmp_path: Path) -> None:
    server = Served(tmp_path / "data")  # no --seed, no --templates-dir: it reads no template
    try:
        env = {**os.environ, "FORGE_URL": server.url, "FORGE_TOKEN": server.root_token}
        (tmp_path / "tpl" / "bin").mkdir(parents=True)
        (tmp_path / "tpl" / "README.md").write_text("# from the client\n")
        (tmp_path / "tpl" / "bin" / "blob").write_bytes(bytes(range(256)))
        scenario = tmp_path / "s.yml"
        scenario.write_text(yaml.safe_dump(
            {**GROUP, "projects": [{"path": "g/app", "template": "tpl", "files": {"x": "y"}}]}))
        result = subprocess.run([FORGE, "seed", str(scenario)], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "g/app" in json.loads(result.stdout)["projects"]
        raw = requests.get(f"{server.url}/api/v4/projects/g%2Fapp/repository/files/bin%2Fblob/raw",
                           params={"ref": "main"}, headers={"PRIVATE-TOKEN": server.root_token})
        assert raw.status_code == 200 and raw.content == bytes(range(256))
        scenario.write_text(yaml.safe_dump(
            {**GROUP, "projects": [{"path": "g/two", "template": "../data"}]}))
        result = subprocess.run([FORGE, "seed", str(scenario)], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1
        assert result.stderr == (f"Error: {scenario}: projects[0] (g/two).template: '../data' "
                                 "must not contain '..'\n")
    finally:
        server.stop()


# -- bad values: 400 naming the entry, never 500 -----------------------------------------

TIMEOUT = f"timeout must be a whole number of seconds from 1 to {MAX_JOB_TIMEOUT}"


@pytest.mark.parametrize("raw", ['1e308', '100000000000000000000000', 'Infinity', 'NaN', '-5',
                                 'true', '"soon"', '[1]', '2592001', '"\\u00b2"'])
def test_control_job_timeout_out_of_range_is_400(forge: Forge, api: requests.Session,
                                                 raw: str) -> None:
    _seed(api, forge, {**GROUP, "projects": [{"path": "g/app"}]}).raise_for_status()
    body = '{"project": "g/app", "user": "bob", "timeout": ' + raw + '}'
    response = api.post(f"{forge.url}/-/forge/jobs", data=body,
                        headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"message": TIMEOUT})


def test_control_job_timeout_in_range_is_kept(forge: Forge, api: requests.Session) -> None:
    _seed(api, forge, {**GROUP, "projects": [{"path": "g/app"}]}).raise_for_status()
    for given, kept in ((MAX_JOB_TIMEOUT, MAX_JOB_TIMEOUT), (60.0, 60), ("90", 90)):
        response = api.post(f"{forge.url}/-/forge/jobs",
                            json={"project": "g/app", "user": "bob", "timeout": given})
        assert (response.status_code, response.json()["timeout"]) == (201, kept)


@pytest.mark.parametrize("endpoint", ["seed", "jobs", "allowlist"])
def test_control_deeply_nested_json_is_400(forge: Forge, api: requests.Session,
                                           endpoint: str) -> None:
    body = '{"a": ' * 100_000 + "1" + "}" * 100_000
    response = api.post(f"{forge.url}/-/forge/{endpoint}", data=body,
                        headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (
        400, {"message": "the JSON body is nested too deeply"})


def test_control_deeply_nested_yaml_is_400(forge: Forge, api: requests.Session) -> None:
    response = api.post(f"{forge.url}/-/forge/seed", data="a: " + "[" * 100_000,
                        headers={"Content-Type": "application/yaml"})
    assert (response.status_code, response.json()) == (
        400, {"message": "scenario is nested too deeply"})


BAD_NAME = "invalid file name {!r}: use a relative path without '.', '..' or '.git' segments"


@pytest.mark.parametrize("project,message", [
    ({"files": {"../x": "x"}}, "projects[0] (g/app).files: " + BAD_NAME.format("../x")),
    ({"files": {".git/config": "x"}}, "projects[0] (g/app).files: " + BAD_NAME.format(".git/config")),
    ({"files": {"a/.GIT/hooks/post-checkout": "x"}},
     "projects[0] (g/app).files: " + BAD_NAME.format("a/.GIT/hooks/post-checkout")),
    ({"files": {"/etc/passwd": "x"}}, "projects[0] (g/app).files: " + BAD_NAME.format("/etc/passwd")),
    ({"files": {"a//b": "x"}}, "projects[0] (g/app).files: " + BAD_NAME.format("a//b")),
    ({"lfs_files": {"../../x.bin": "x"}},
     "projects[0] (g/app).lfs_files: " + BAD_NAME.format("../../x.bin")),
    ({"submodules": {"../../x": "../lib.git"}},
     "projects[0] (g/app).submodules: " + BAD_NAME.format("../../x")),
    ({"submodules": {".git": "../lib.git"}}, "projects[0] (g/app).submodules: " + BAD_NAME.format(".git")),
    ({"files": {"a": ["list"]}}, "projects[0] (g/app).files['a']: expected the file's content, got a list"),
    ({"files": ["a"]}, "projects[0] (g/app).files: expected a mapping of file name to content, got a list"),
    ({"submodules": {"lib": 5.5}}, "projects[0] (g/app).submodules['lib']: expected a string, got a number"),
    ({"submodules": {"m": "http://[::1"}}, "projects[0] (g/app): submodule 'm': not a valid URL"),
    ({"visibility": ["public"]}, "projects[0] (g/app).visibility: expected a string, got a list"),
    ({"lfs_enabled": "no"}, "projects[0] (g/app).lfs_enabled: expected true or false, got a string"),
    ({"members": {"bob": ["developer"]}},
     "projects[0] (g/app).members.bob: expected a role name or access level, got a list"),
    ({"protected_branches": [{"name": "r/*", "allow_force_push": "yes"}]},
     "projects[0] (g/app).protected_branches[0].allow_force_push: expected true or false, got a string"),
    ({"job_token_scope": {"inbound_enabled": "false"}},
     "projects[0] (g/app).job_token_scope.inbound_enabled: expected true or false, got a string"),
    ({"job_token_scope": {"allowlist": {"groups": [{"path": "g", "job_token_policies": "read"}]}}},
     "projects[0] (g/app).job_token_scope.allowlist.groups[0].job_token_policies: "
     "expected a list of strings, got a string"),
])
def test_seed_bad_project_values_are_400_naming_the_entry(
        forge: Forge, api: requests.Session, project: dict[str, Any], message: str) -> None:
    _refused(forge, _seed(api, forge, {**GROUP, "projects": [{"path": "g/app", **project}]}), message)


@pytest.mark.parametrize("user,message", [
    ({"password": ["hunter2", "x"]}, "users[0] (alice).password: expected a string, got a list"),
    ({"password": {"p": 1}}, "users[0] (alice).password: expected a string, got a mapping"),
    ({"tokens": [{"token": "2030-01-01"}]}, None),  # a string: fine (and long enough)
    ({"tokens": [{"scopes": "api"}]},
     "users[0] (alice).tokens[0].scopes: expected a list of strings, got a string"),
    ({"tokens": [{"revoked": "no"}]},
     "users[0] (alice).tokens[0].revoked: expected true or false, got a string"),
    ({"admin": "yes"}, "users[0] (alice).admin: expected true or false, got a string"),
    ({"email": ["a@b"]}, "users[0] (alice).email: expected a string, got a list"),
    # YAML's `password: 01234567` is the octal number 342391: a secret is never converted
    ({"password": 342391}, "users[0] (alice).password: expected a string, got a number (quote it)"),
    ({"tokens": [{"token": 12345678}]},
     "users[0] (alice).tokens[0].token: expected a string, got a number (quote it)"),
])
def test_seed_bad_user_values_are_400_naming_the_entry(
        forge: Forge, api: requests.Session, user: dict[str, Any], message: str | None) -> None:
    response = _seed(api, forge, {"users": [{"username": "alice", **user}]})
    if message is None:
        assert response.status_code == 201, response.text
    else:
        assert (response.status_code, response.json()) == (400, {"message": message})


def test_seed_token_given_as_a_date_is_400(forge: Forge, api: requests.Session) -> None:
    scenario = "users:\n  - username: alice\n    tokens: [{name: ci, token: 2030-01-01}]\n"
    response = api.post(f"{forge.url}/-/forge/seed", data=scenario,
                        headers={"Content-Type": "application/yaml"})
    assert (response.status_code, response.json()) == (
        400, {"message": "users[0] (alice).tokens[0].token: expected a string, got a date"})


def test_seed_bad_job_values_are_400(forge: Forge, api: requests.Session) -> None:
    base = {**GROUP, "projects": [{"path": "g/app"}]}
    for job, message in [
        ({"timeout": 1e308}, f"jobs[0].timeout: must be a whole number of seconds from 1 to "
                             f"{MAX_JOB_TIMEOUT}"),
        ({"timeout": 10 ** 23}, f"jobs[0].timeout: must be a whole number of seconds from 1 to "
                                f"{MAX_JOB_TIMEOUT}"),
        ({"token": ["glcbt-x"]}, "jobs[0].token: expected a string, got a list"),
        ({"project": {"path": "g/app"}}, "jobs[0].project: expected a string, got a mapping"),
    ]:
        response = _seed(api, forge, {**base, "jobs": [{"project": "g/app", "user": "bob", **job}]})
        assert (response.status_code, response.json()) == (400, {"message": message})


def test_seed_names_an_entry_without_echoing_an_odd_name(forge: Forge, api: requests.Session) -> None:
    response = _seed(api, forge, {"users": [{"username": ["x"]}]})
    assert (response.status_code, response.json()) == (
        400, {"message": "users[0].username: expected a string, got a list"})


# -- messages never echo a value that could be a secret ------------------------------------

@pytest.mark.parametrize("text,message", [
    ("users:\n  - username: alice\n    password: s3cr3t-value: oops\n",
     "scenario is not valid YAML: line 3, column 27: mapping values are not allowed here"),
    ('users:\n  - {username: alice, password: "s3cr3t-value\n',
     "scenario is not valid YAML: line 3, column 1: found unexpected end of stream"),
    ("users:\n  - username: alice\n    tokens: [{token: glpat-s3cr3t-value, expires_at: 2030-02-30}]\n",
     "scenario is not valid YAML: a value is out of range (an impossible date or number)"),
    ("users:\n  - username: alice\n    tokens: [{expires_at: s3cr3t-value}]\n",
     "users[0] (alice).tokens[0].expires_at: not a date: use YYYY-MM-DD or an ISO 8601 time"),
    ("users:\n  - username: alice\n    tokens: [{expires_at: [s3cr3t-value]}]\n",
     "users[0] (alice).tokens[0].expires_at: expected a date (YYYY-MM-DD), got a list"),
    ("users:\n  - username: alice\n    password: !!python/object s3cr3t-value\n",
     "scenario is not valid YAML: line 3, column 15: could not determine a constructor for the "
     "tag 'tag:yaml.org,2002:python/object'"),
])
def test_seed_errors_never_echo_the_offending_value(forge: Forge, api: requests.Session,
                                                    text: str, message: str) -> None:
    response = api.post(f"{forge.url}/-/forge/seed", data=text,
                        headers={"Content-Type": "application/yaml"})
    assert (response.status_code, response.json()) == (400, {"message": message})
    assert "s3cr3t" not in response.text


@pytest.mark.parametrize("method,endpoint,body,status,message", [
    ("post", "jobs", {"ref": ["main"]}, 400, "ref must be a string"),
    ("post", "jobs", {"token": {"a": 1}}, 400, "token must be a string"),
    ("post", "jobs", {"token": 1}, 400, "job tokens start with 'glcbt-'"),
    ("post", "jobs", {"project": 10**30}, 404, f"project {10**30} does not exist"),
    ("post", "jobs", {"project": "9" * 25}, 404, f"project {'9' * 25} does not exist"),
    ("put", "members", {"project": 10**30, "role": "guest"}, 404, f"project {10**30} does not exist"),
    ("put", "members", {"role": ["guest"]}, 400, "role must be a role name or access level"),
    ("put", "members", {"role": "\u00b2"}, 400, "unknown role '\u00b2'; use one of no_access, "
     "minimal_access, guest, reporter, developer, maintainer, owner"),
    ("post", "allowlist", {"source_project": 10**30}, 404, f"source_project {10**30} does not exist"),
    ("patch", "jobs/1", {"status": ["success"]}, 400, "status must be a string"),
    # a digit to str.isdigit(), none to int()
    ("post", "jobs", {"project": "\u00b2"}, 404, "project '\u00b2' does not exist"),
    ("post", "jobs", {"user": "\u00b2"}, 404, "user '\u00b2' does not exist"),
    ("post", "allowlist", {"project": "\u00b2", "source_project": "g/app"}, 404,
     "project '\u00b2' does not exist"),
    ("post", "allowlist", {"source_project": "\u00b2"}, 404, "project '\u00b2' does not exist"),
    ("patch", "jobs/1", {"status": "\u00b2"}, 400, "unknown job status '\u00b2'; use one of "
     "created, pending, running, success, failed, canceled, skipped, manual"),
    ("get", "jobs/99999999999999999999999", None, 404, "job 99999999999999999999999 does not exist"),
])
def test_control_bad_values_are_4xx(forge: Forge, api: requests.Session, method: str,
                                    endpoint: str, body: dict[str, Any] | None, status: int,
                                    message: str) -> None:
    _seed(api, forge, {**GROUP, "projects": [{"path": "g/app"}],
                       "jobs": [{"project": "g/app", "user": "bob"}]}).raise_for_status()
    full = {"project": "g/app", "user": "bob", **body} if body is not None else None
    response = api.request(method, f"{forge.url}/-/forge/{endpoint}", json=full)
    assert (response.status_code, response.json()) == (status, {"message": message})


def test_seed_creates_submodule_targets_first_whatever_the_order(forge: Forge, api: requests.Session,
                                                                 git, tmp_path: Path) -> None:
    scenario = {"groups": [{"path": "corp"}, {"path": "corp/platform"}], "projects": [
        {"path": "corp/app", "visibility": "public", "submodules": {"lib": "../platform/lib.git"}},
        {"path": "corp/platform/lib", "visibility": "public", "files": {"lib.txt": "lib\n"}}]}
    answer = _seed(api, forge, scenario)
    assert answer.status_code == 201, answer.text
    git("clone", "-q", "--recurse-submodules", f"{forge.url}/corp/app.git", tmp_path / "app")
    assert (tmp_path / "app" / "lib" / "lib.txt").read_text() == "lib\n"
    forge.reset()
    circle = {"groups": [{"path": "g"}], "projects": [
        {"path": "g/a", "submodules": {"b": "../b.git"}}, {"path": "g/b", "submodules": {"a": "../a.git"}}]}
    _refused(forge, _seed(api, forge, circle),
             "projects[0] (g/a).submodules: the scenario's submodules point at each other in a circle")
