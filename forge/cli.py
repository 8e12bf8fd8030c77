"""The `forge` command: serve a forge, and start or finish jobs on a running one."""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import click

from forge.config import ForgeConfig, http_url

if TYPE_CHECKING:
    import requests

ROOT_TOKEN_FILE = "root-token"
REGISTRATION_TOKEN_FILE = "runner-registration-token"


def _root_token(data_dir: Path, given: str | None) -> str:
    """Use the given root token, or the one this data directory was started with before."""
    from forge.tokens import new_personal_token

    return _kept_secret(data_dir / ROOT_TOKEN_FILE, given, new_personal_token)


def _kept_secret(path: Path, given: str | None, make: Any) -> str:
    """The given secret, or the one kept in `path` (mode 0600), made once."""
    from forge.tokens import kept_secret

    return given or kept_secret(path, make)


@click.group()
def main() -> None:
    """forge: a GitLab-faithful mock Git forge for CI testing."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=int, show_default=True, help="0 picks a free port")
@click.option("--data-dir", default=".forge-data", type=click.Path(path_type=Path),
              show_default=True)
@click.option("--seed", "seed_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="scenario to create on first start")
@click.option("--templates-dir", default=None, envvar="FORGE_TEMPLATES_DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="where `template:` entries of POST /-/forge/seed live "
                   "(default: the --seed file's directory; without either, none)")
@click.option("--fresh", is_flag=True,
              help="empty the data directory first (only when no other forge holds it), "
                   "and the --database-url database's forge tables")
@click.option("--root-token", default=None, envvar="FORGE_ROOT_TOKEN",
              help="PAT of the admin `root` (default: generated once per data directory)")
@click.option("--database-url", default=None, envvar="FORGE_DATABASE_URL",
              help="SQLAlchemy URL (default: SQLite in the data directory)")
@click.option("--registry", default=None, envvar="FORGE_REGISTRY_URL",
              help="host:port of a registry trusting this forge (jobs get CI_REGISTRY_*)")
@click.option("--git-engine", default=None, envvar="FORGE_GIT_ENGINE",
              type=click.Choice(["auto", "git", "dulwich"]),
              help="who answers fetches: git upload-pack, dulwich, or auto (git when installed)")
@click.option("--runner-registration-token", default=None, envvar="FORGE_RUNNER_REGISTRATION_TOKEN",
              help="for `POST /api/v4/runners` (default: generated once per data directory)")
@click.option("--quiet", is_flag=True, help="do not log requests")
@click.option("--workers", default=1, type=click.IntRange(1, 256), envvar="FORGE_WORKERS",
              show_default=True, help="server processes (gunicorn) sharing the data directory and "
                                      "database; more than 1 wants PostgreSQL")
def serve(host: str, port: int, data_dir: Path, seed_file: Path | None,
          templates_dir: Path | None, fresh: bool, root_token: str | None,
          database_url: str | None, registry: str | None, git_engine: str | None,
          runner_registration_token: str | None, quiet: bool, workers: int) -> None:
    """Serve a forge; print its URL, the root token and clone commands."""
    import logging

    from forge.datadir import DataDirBusy, DataDirLock

    try:  # before anything in the data directory is read, written or deleted
        lock = DataDirLock.acquire(data_dir, shared=workers > 1)  # fleets share a directory
        if fresh:
            lock.empty()
    except DataDirBusy as exc:
        raise click.ClickException(str(exc)) from None
    if templates_dir is None and seed_file is not None:
        templates_dir = seed_file.parent
    from forge.tokens import new_registration_token
    registration = _kept_secret(data_dir / REGISTRATION_TOKEN_FILE, runner_registration_token,
                                new_registration_token)
    config = ForgeConfig.from_env(data_dir=data_dir, database_url=database_url,
                                  root_token=_root_token(data_dir, root_token),
                                  runner_registration_token=registration,
                                  registry_url=registry, git_engine=git_engine,
                                  templates_dir=str(templates_dir.resolve()) if templates_dir else None)
    from forge.gitproc import EngineError, find_git
    try:
        find_git(config.git_engine)
        sock = listen(host, port)
    except EngineError as exc:
        lock.release()
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        lock.release()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Bound before the app is built, as gunicorn does: a client that connects now waits in
    # the socket's queue until the app answers, and scripts can go on at once.
    click.echo(f"forge listening on {http_url(host, sock.getsockname()[1])}", nl=True)
    sys.stdout.flush()
    if fresh and database_url:  # outside the data directory: empty it as well
        _empty_database(database_url)
    if workers > 1:
        _serve_fleet(config, lock, sock, host, workers, seed_file, quiet)
        return
    from forge.server import ForgeServer
    server = ForgeServer(config, host, port, lock=lock, sock=sock)
    # The registry's signing key is created on first start (RSA: a quarter second), aside
    # from the requests; /jwt/auth and the certificate route wait for it if they come first.
    threading.Thread(target=server.state.signing_key, name="forge-signing-key", daemon=True).start()
    _announce(config)
    if seed_file is not None:
        _seed_on_start(server, seed_file)
    sys.stdout.flush()
    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        lock.release()


def _empty_database(url: str) -> None:
    """Drop forge's tables from the database at `url` (the start creates them anew)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from forge import database
    from forge.models import db

    name = make_url(url).database
    if url.startswith("sqlite") and (not name or not Path(name).exists()):
        return  # nothing there yet (or in memory)
    engine = create_engine(url, **database.engine_options(url))
    try:
        with engine.begin() as connection, database.schema_lock(connection):
            database.empty(connection, db.metadata)
    finally:
        engine.dispose()


def _announce(config: ForgeConfig) -> None:
    """Print the tokens a user of `forge serve` needs."""
    click.echo(f"root token: {config.root_token}   (admin `root`; header PRIVATE-TOKEN)")
    click.echo(f"runner registration token: {config.runner_registration_token}   "
               "(gitlab-runner register --registration-token)")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0 picks a free port), ready for `ForgeServer`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def _serve_fleet(config: ForgeConfig, lock: Any, sock: socket.socket, host: str, workers: int,
                 seed_file: Path | None, quiet: bool) -> None:
    from forge import fleet

    try:
        fleet.serve(config, lock, sock, host, workers, quiet=quiet, announce=_announce,
                    on_start=(lambda started: _seed_on_start(started, seed_file)) if seed_file else None)
    finally:
        lock.release()  # in the master; a worker leaving through here keeps the master's lock


def _seed_on_start(server: Any, seed_file: Path) -> None:
    from sqlalchemy import func, select

    from forge import seed
    from forge.domain import DomainError
    from forge.models import Project, db

    with server.app.app_context():
        if db.session.scalar(select(func.count(Project.id))):
            click.echo("seed: the forge already holds projects; not seeding again")
            return
        scenario = seed.load_file(seed_file)
        try:
            result = seed.apply(server.state, scenario, seed_file.resolve().parent)
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            raise click.ClickException(f"seed {seed_file}: {exc}") from None
        lines = clone_commands(server.state, scenario, result)
    for line in lines:
        click.echo(line)


def clone_commands(state: Any, scenario: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Ready-to-paste `git clone` commands for a seeded forge, each with its expected outcome.

    The expectation comes from the permission rules themselves, so it is what the
    forge will answer. Runs inside an app context.
    """
    from forge import auth, domain
    from forge import permissions as perm

    url = state.config.base_url
    netloc = urlsplit(url).netloc
    users = {u["username"]: u for u in scenario.get("users") or []}

    def clone(path: str, user: str = "", secret: str = "") -> str:
        creds = f"{quote(user, safe='')}:{quote(secret, safe='')}@" if user else ""
        target = shlex.quote("/tmp/forge-clones/" + path.replace("/", "-"))
        return f"rm -rf {target}; git clone http://{creds}{netloc}/{path}.git {target}"

    def expect(username: str, secret: str, path: str) -> str:
        principal = auth.principal_for(auth.Credentials(username, secret) if username else None)
        project = domain.find_project(path)
        facts = domain.project_facts(project, auth.user_of(principal), state.backend) if project else None
        decision = perm.authorize(principal, perm.Action.READ, facts, state.now(), url)
        if decision.allowed:
            return "expect: clones"
        return f"expect: {decision.status} ({decision.reason}) {decision.message}"

    roles = {level: name for name, level in perm.ROLE_NAMES.items()}

    def role_in(username: str, path: str) -> str:
        """The user's role in the project, through its groups too ("" for none)."""
        user, project = domain.user_by_username(username), domain.find_project(path)
        if user is None or project is None:
            return ""
        level = domain.project_facts(project, user).role
        return roles.get(level, str(level)) if level != perm.NO_ACCESS else ""

    lines = ["", "Paste any of these into a terminal:"]
    for project in scenario.get("projects") or []:
        path, visibility = project["path"], project.get("visibility", "private")
        if visibility == "public":
            lines += [f"# {path} ({visibility}), anonymously: {expect('', '', path)}", clone(path)]
            continue
        members = {name: role for name, role in ((u, role_in(u, path)) for u in users) if role}
        direct = project.get("members") or {}
        if isinstance(direct, list):
            direct = {m.get("user"): m.get("role") for m in direct}
        with_password = [u for u in users.values() if u.get("password")]
        active_members = [u for u in with_password
                          if u["username"] in members and u.get("state", "active") == "active"]
        picks = [  # one member (its own first), and for internal projects an outsider and an external user
            next((u for u in active_members if u["username"] in direct),
                 active_members[0] if active_members else None),
            next((u for u in with_password if u["username"] not in members
                  and not u.get("external") and u.get("state", "active") == "active"), None)
            if visibility == "internal" else None,
            next((u for u in with_password if u.get("external")), None)
            if visibility == "internal" else None,
            next((u for u in with_password if u["username"] in members
                  and u.get("state", "active") != "active"), None),
        ]
        for user in filter(None, picks):
            name = user["username"]
            kind = ", ".join(filter(None, [
                members.get(name, "not a member"), "external" if user.get("external") else "",
                user.get("state", "active") if user.get("state", "active") != "active" else ""]))
            lines += [f"# {path} ({visibility}) as {name} ({kind}) with a password: "
                      f"{expect(name, user['password'], path)}",
                      clone(path, name, user["password"])]
    submodules = {p["path"]: list((p.get("submodules") or {}).values())
                  for p in scenario.get("projects") or []}
    for job in result.get("jobs") or []:
        token = job["token"]
        paths = result["projects"] if job["status"] == "running" else [job["project"]]
        for path in paths:
            lines += [f"# {path} with the token of {job['status']} job {job['id']} of "
                      f"{job['project']} ({job['user']}): {expect('gitlab-ci-token', token, path)}",
                      clone(path, "gitlab-ci-token", token)]
        if job["status"] == "running" and submodules.get(job["project"]):
            targets = [posixpath.normpath(posixpath.join(f"{job['project']}.git", url))
                       .removesuffix(".git") for url in submodules[job["project"]]]
            outcomes = [expect("gitlab-ci-token", token, t) for t in [job["project"], *targets]]
            outcome = next((o for o in outcomes if o != "expect: clones"), "expect: clones")
            lines += [f"# {job['project']} and its submodules ({', '.join(targets)}) with the "
                      f"token of job {job['id']}: {outcome}",
                      clone(job["project"], "gitlab-ci-token", token).replace(
                          "git clone ", "git clone --recurse-submodules ")]
    lines += ["# why was a request allowed or refused? the decision log:",
              f"curl -s -H 'PRIVATE-TOKEN: {state.config.root_token}' {url}/-/forge/events"]
    return lines


def _request(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    import requests
    try:
        return session.request(method, url, timeout=60, **kwargs)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach the forge at {url}: {type(exc).__name__}") from None


def _client(url: str, token: str) -> requests.Session:
    import requests
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = token
    session.headers["Content-Type"] = "application/json"
    return session


def _check(response: requests.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    if response.status_code >= 400:
        raise click.ClickException(f"{response.status_code}: {body.get('message', body)}")
    return body


url_option = click.option("--url", envvar="FORGE_URL", required=True,
                          help="the running forge (env FORGE_URL)")
token_option = click.option("--token", envvar="FORGE_TOKEN", required=True,
                            help="the root token (env FORGE_TOKEN)")


@main.group()
def job() -> None:
    """Start and finish jobs on a running forge."""


@job.command("start")
@url_option
@token_option
@click.option("--project", required=True, help="full path, e.g. acme/app")
@click.option("--user", required=True, help="the triggering user")
@click.option("--ref", default=None)
@click.option("--name", default="build")
@click.option("--timeout", default=3600, type=int)
def job_start(url: str, token: str, project: str, user: str, ref: str | None, name: str,
              timeout: int) -> None:
    """Start a job and print `export` lines for its CI_* variables."""
    body = {"project": project, "user": user, "name": name, "timeout": timeout}
    if ref:
        body["ref"] = ref
    data = _check(_request(_client(url, token), "POST", f"{url.rstrip('/')}/-/forge/jobs",
                           data=json.dumps(body)))
    for key, value in sorted(data["variables"].items()):
        click.echo(f"export {key}={shlex.quote(value)}")


@job.command("finish")
@url_option
@token_option
@click.argument("job_id", type=int)
@click.option("--status", default="success", show_default=True)
def job_finish(url: str, token: str, job_id: int, status: str) -> None:
    """Finish a job (its token stops working at once)."""
    data = _check(_request(_client(url, token), "PATCH", f"{url.rstrip('/')}/-/forge/jobs/{job_id}",
                           data=json.dumps({"status": status})))
    click.echo(f"job {data['id']} is {data['status']}")


@job.command("queue")
@url_option
@token_option
@click.option("--project", required=True, help="full path, e.g. acme/app")
@click.option("--user", required=True, help="the triggering user")
@click.option("--script", "script", multiple=True, required=True, help="a command (repeat for more)")
@click.option("--ref", default=None)
@click.option("--name", default="build")
@click.option("--stage", default="test")
@click.option("--timeout", default=3600, type=int)
@click.option("--image", default=None)
@click.option("--tag", "tags", multiple=True, help="a runner tag the job needs (repeatable)")
@click.option("--needs", multiple=True, help="a job of the same pipeline to wait for (repeatable)")
@click.option("--pipeline", default=None, type=int, help="join this pipeline (needed with --needs)")
@click.option("--var", "variables", multiple=True, help="KEY=VALUE, a variable of the job (repeatable)")
def job_queue(url: str, token: str, project: str, user: str, script: tuple[str, ...],
              ref: str | None, name: str, stage: str, timeout: int, image: str | None,
              tags: tuple[str, ...], needs: tuple[str, ...], pipeline: int | None,
              variables: tuple[str, ...]) -> None:
    """Queue a job for a runner (pending until one takes it); print its id."""
    body: dict[str, Any] = {"project": project, "user": user, "name": name, "stage": stage,
                            "timeout": timeout, "script": list(script), "tags": list(tags),
                            "needs": list(needs)}
    for key, value in (("ref", ref), ("image", image), ("pipeline", pipeline)):
        if value is not None:
            body[key] = value
    if variables:
        if not all("=" in item for item in variables):
            raise click.BadParameter("use KEY=VALUE", param_hint="--var")
        body["variables"] = dict(item.split("=", 1) for item in variables)
    data = _check(_request(_client(url, token), "POST", f"{url.rstrip('/')}/-/forge/jobs",
                           data=json.dumps(body)))
    click.echo(data["id"])


@job.command("log")
@url_option
@token_option
@click.argument("job_id", type=int)
def job_log(url: str, token: str, job_id: int) -> None:
    """Print a job's log (what its runner sent), and its status on stderr."""
    session = _client(url, token)
    base = url.rstrip("/")
    data = _check(_request(session, "GET", f"{base}/-/forge/jobs/{job_id}"))
    response = _request(session, "GET", f"{base}/api/v4/projects/{data['project_id']}/jobs/"
                                         f"{job_id}/trace")
    if response.status_code != 200:
        _check(response)
    click.echo(response.text, nl=False)
    data = _check(_request(session, "GET", f"{base}/-/forge/jobs/{job_id}"))
    # stdout stays the log as sent; in a terminal the status still gets a line of its own
    apart = "\n" if response.text and not response.text.endswith("\n") else ""
    click.echo(f"{apart}job {job_id} is {data['status']}", err=True)


@main.command("seed")
@url_option
@token_option
@click.option("--reset", is_flag=True, help="empty the forge first (POST /-/forge/reset)")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def seed_remote(url: str, token: str, reset: bool, scenario: Path) -> None:
    """Send a scenario to a running forge and print the ids and secrets it created.

    `template:` directories are read here, relative to the scenario file (and confined
    to its directory), and sent inline as `files:`: the server never reads them.
    """
    import yaml

    from forge import seed

    try:
        data = seed.inline_templates(seed.load_file(scenario), scenario.resolve().parent)
    except seed.SeedError as exc:
        raise click.ClickException(f"{scenario}: {exc}") from None
    session = _client(url, token)
    if reset:
        _check(_request(session, "POST", f"{url.rstrip('/')}/-/forge/reset"))
    session.headers["Content-Type"] = "application/yaml"
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    created = _check(_request(session, "POST", f"{url.rstrip('/')}/-/forge/seed", data=body))
    click.echo(json.dumps(created, indent=2))


@main.command("registry-config")
@url_option
@click.option("--cert-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="where to save the forge's token certificate (the registry's rootcertbundle)")
@click.option("--storage", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the registry's storage directory")
@click.option("--addr", default="127.0.0.1:5000", show_default=True, help="the registry's address")
def registry_config_command(url: str, cert_file: Path, storage: Path, addr: str) -> None:
    """Print a docker-registry config.yml that trusts a running forge's tokens."""
    from forge.registry import registry_config

    try:
        import requests
        response = requests.get(f"{url.rstrip('/')}/-/forge/registry/certificate", timeout=30)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach the forge at {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise click.ClickException(f"could not download the certificate: {response.status_code}")
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(response.content)
    storage.mkdir(parents=True, exist_ok=True)
    click.echo(registry_config(forge_url=url.rstrip("/"), cert_file=cert_file.resolve(),
                               storage=storage.resolve(), addr=addr), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
