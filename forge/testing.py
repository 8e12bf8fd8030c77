"""The Python API behind the `forge` fixture: set a forge up, run jobs, read the decision log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import select

from forge import domain, events, jobs, seed
from forge.models import Group, Project, db
from forge.repos import FileContent
from forge.server import ForgeServer

SAMPLE_IMAGE_DIR = Path(__file__).resolve().parent / "data" / "images" / "hello"
SAMPLE_IMAGE = f"oci:{SAMPLE_IMAGE_DIR}:latest"  # a tiny OCI image to push, e.g. with skopeo copy


@dataclass(frozen=True)
class UserHandle:
    """A user the test created, with the secrets it was given."""

    id: int
    username: str
    email: str
    password: str | None
    token: str | None  # a PAT with the scopes asked for (default `api`)


@dataclass(frozen=True)
class ProjectHandle:
    """A project the test created."""

    id: int
    path: str
    url: str  # http://host:port/<path>.git, without credentials


@dataclass(frozen=True)
class JobHandle:
    """A job the test started; `token` is its CI_JOB_TOKEN."""

    id: int
    token: str
    project: str
    user: str
    variables: dict[str, str] = field(default_factory=dict)
    pipeline: int = 0  # its pipeline's id: pass it to start_job to add jobs to the pipeline


UserRef = UserHandle | str
ProjectRef = ProjectHandle | str | int


def _name(user: UserRef) -> str:
    return user.username if isinstance(user, UserHandle) else user


def _path(project: ProjectRef) -> str | int:
    return project.id if isinstance(project, ProjectHandle) else project


class Forge:
    """Drive one live forge from a test: create things, run jobs, ask why a request failed."""

    def __init__(self, server: ForgeServer) -> None:
        self.server = server
        self.app = server.app
        self.state = server.state
        self.url = server.url
        self.root_token = self.state.config.root_token
        self.runner_registration_token = self.state.config.runner_registration_token
        # What this test created, with the secrets forge keeps only as digests: so that
        # `clone_url(user="bob")` or `job_variables(3)` can find them by name or id.
        self._users: dict[str, UserHandle] = {}
        self._jobs: dict[int, JobHandle] = {}

    # -- plumbing ----------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[None]:
        with self.app.app_context():
            try:
                yield
                db.session.commit()
            except BaseException:
                db.session.rollback()
                raise

    def now(self) -> datetime:
        """Return the forge's clock."""
        return self.state.now()

    def advance_clock(self, seconds: float) -> None:
        """Move the forge's clock forward (e.g. past a job's timeout)."""
        offset = self.state.clock_offset() + timedelta(seconds=seconds)
        self.state.set_clock_offset(offset.total_seconds())  # every process of the forge

    def reset(self) -> None:
        """Empty the forge (root and its token stay) and restore the real clock."""
        self.state.set_clock_offset(0)
        self.state.take_errors()
        # Housekeeping still at work on a repository of the last test would sweep the "stale"
        # ref locks of a new repository that reuses its directory (ids restart after a reset).
        self.state.housekeeper.wait_idle(30)
        self._users.clear()
        self._jobs.clear()
        with self._session():
            domain.reset(self.state.backend, self.state.lfs)

    def seed(self, scenario: Mapping[str, Any] | str | Path, *,
             templates_dir: str | Path | None = None) -> dict[str, Any]:
        """Apply a seed scenario (a mapping, or a YAML file path); return ids and secrets.

        `template:` entries name directories below `templates_dir`, which defaults to the
        file's directory (for a mapping: the forge's `templates_dir` setting, if any).
        """
        if isinstance(scenario, (str, Path)):
            templates_dir = templates_dir or Path(scenario).resolve().parent
            scenario = seed.load_file(Path(scenario))
        templates_dir = templates_dir or self.state.config.templates_dir or None
        with self._session():
            return seed.apply(self.state, scenario, Path(templates_dir) if templates_dir else None)

    # -- users -------------------------------------------------------------------------

    def create_user(self, username: str, *, password: str | None = "", admin: bool = False,
                    external: bool = False, state: str = "active", email: str | None = None,
                    scopes: tuple[str, ...] | None = ("api",)) -> UserHandle:
        """Create a user with a password (default `<username>-pass-1`) and an `api` PAT."""
        password = f"{username}-pass-1" if password == "" else password
        with self._session():
            user = domain.create_user(
                self.now(), username, email=email, password=password, admin=admin,
                external=external, state=state,
                password_method=self.state.config.password_hash_method)
            token = None
            if scopes:
                _, token = domain.create_token(self.now(), user, name="test", scopes=scopes)
            handle = UserHandle(user.id, user.username, user.email, password, token)
        self._users[handle.username.lower()] = handle
        return handle

    def _user_handle(self, user: UserRef) -> UserHandle:
        if isinstance(user, UserHandle):
            return user
        try:
            return self._users[user.lower()]
        except KeyError:
            raise LookupError(f"no user {user!r} was created by this test's create_user: pass "
                              "the UserHandle it returned, or the secret as token=") from None

    def _job_handle(self, job: JobHandle | int) -> JobHandle:
        if isinstance(job, JobHandle):
            return job
        try:
            return self._jobs[job]
        except KeyError:
            raise LookupError(f"job {job} was not started by this test's start_job or "
                              "queue_job: pass the JobHandle it returned") from None

    def create_token(self, user: UserRef, scopes: tuple[str, ...] = ("api",), *,
                     expires_at: datetime | date | str | None = None, name: str = "token") -> str:
        """Create another PAT for `user` and return its secret; `expires_at` as a seed
        takes it (a date, a datetime, or `YYYY-MM-DD` / ISO 8601 text)."""
        when = seed.parse_datetime(expires_at, "expires_at")
        with self._session():
            _, secret = domain.create_token(self.now(), domain.get_user(_name(user)), name=name,
                                            scopes=scopes, expires_at=when)
            return secret

    def revoke_tokens(self, user: UserRef) -> None:
        """Revoke every PAT of `user`."""
        from forge.models import PersonalAccessToken
        with self._session():
            uid = domain.get_user(_name(user)).id
            for pat in db.session.scalars(select(PersonalAccessToken).where(
                    PersonalAccessToken.user_id == uid)):
                pat.revoked = True

    def set_user_state(self, user: UserRef, state: str) -> None:
        """Block (`blocked`), deactivate or re-activate (`active`) a user."""
        with self._session():
            domain.set_user_state(domain.get_user(_name(user)), state)

    def block_user(self, user: UserRef) -> None:
        """Block a user: all their credentials, their jobs' tokens included, stop working."""
        self.set_user_state(user, "blocked")

    # -- groups, projects, members -----------------------------------------------------

    def create_group(self, path: str, *, visibility: str = "private",
                     members: Mapping[str, str | int] | None = None) -> int:
        """Create a group (its parent must exist); return its id."""
        with self._session():
            group = domain.create_group(self.now(), path, visibility=visibility)
            for username, role in (members or {}).items():
                domain.set_member(domain.get_user(username), group, role)
            return group.id

    def create_project(self, path: str, *, visibility: str = "private",
                       files: Mapping[str, FileContent] | None = None,
                       default_branch: str = "main",
                       members: Mapping[str, str | int] | None = None,
                       protect_default_branch: bool = True,
                       lfs_files: Mapping[str, FileContent] | None = None,
                       submodules: Mapping[str, str] | None = None) -> ProjectHandle:
        """Create a project (with an initial commit of `files`, if given).

        `lfs_files` are stored as LFS objects and committed as pointers (tracked in
        `.gitattributes`); `submodules` maps a path to another forge project's URL,
        relative (`../lib.git`, as GitLab recommends) or absolute (`forge.url + "/g/lib.git"`).
        """
        with self._session():
            project = domain.create_project(
                self.now(), self.state.backend, path, visibility=visibility, files=files,
                default_branch=default_branch, protect_default_branch=protect_default_branch,
                lfs_files=lfs_files, lfs=self.state.lfs, submodules=submodules)
            for username, role in (members or {}).items():
                domain.set_member(domain.get_user(username), project, role)
            return ProjectHandle(project.id, project.full_path, f"{self.url}/{project.full_path}.git")

    def _target(self, project: ProjectRef | None, group: str | None) -> Project | Group:
        if project is not None:
            return domain.get_project(_path(project))
        if group is not None:
            return domain.get_group(group)
        raise ValueError("name a project or a group")

    def add_member(self, user: UserRef, role: str | int, *, project: ProjectRef | None = None,
                   group: str | None = None) -> None:
        """Give `user` a role in a project or group (or change it: demote, promote)."""
        with self._session():
            domain.set_member(domain.get_user(_name(user)), self._target(project, group), role)

    set_role = add_member

    def remove_member(self, user: UserRef, *, project: ProjectRef | None = None,
                      group: str | None = None) -> None:
        """Remove `user`'s direct membership."""
        with self._session():
            domain.remove_member(domain.get_user(_name(user)), self._target(project, group))

    def update_project(self, project: ProjectRef, **changes: Any) -> None:
        """Change visibility, default_branch, inbound_enabled, outbound_enabled, job_push_allowed."""
        with self._session():
            domain.update_project(domain.get_project(_path(project)), **changes)

    def protect_branch(self, project: ProjectRef, name: str, *,
                       push_access_level: str | int = "maintainer",
                       allow_force_push: bool = False) -> None:
        """Protect a branch (or `*` wildcard) of a project."""
        with self._session():
            domain.protect_branch(domain.get_project(_path(project)), name, push_access_level,
                                  allow_force_push)

    def unprotect_branch(self, project: ProjectRef, name: str) -> None:
        """Remove a protected branch rule."""
        with self._session():
            domain.unprotect_branch(domain.get_project(_path(project)), name)

    def allow(self, project: ProjectRef, *, source_project: ProjectRef | None = None,
              source_group: str | None = None) -> None:
        """Admit jobs of `source_project` (or of projects below `source_group`) to `project`."""
        with self._session():
            target = domain.get_project(_path(project))
            if source_project is not None:
                domain.allow_project(self.now(), target, domain.get_project(_path(source_project)))
            elif source_group is not None:
                domain.allow_group(self.now(), target, domain.get_group(source_group))
            else:
                raise ValueError("name source_project or source_group")

    def disallow(self, project: ProjectRef, *, source_project: ProjectRef | None = None,
                 source_group: str | None = None) -> None:
        """Remove an inbound allowlist entry."""
        with self._session():
            target = domain.get_project(_path(project))
            domain.disallow(
                target,
                project=domain.get_project(_path(source_project)) if source_project else None,
                group=domain.get_group(source_group) if source_group else None)

    def allow_outbound(self, project: ProjectRef, target: ProjectRef) -> None:
        """Add `target` to `project`'s legacy outbound scope (turn it on with update_project)."""
        with self._session():
            domain.allow_outbound(self.now(), domain.get_project(_path(project)),
                                  domain.get_project(_path(target)))

    # -- jobs --------------------------------------------------------------------------

    def start_job(self, project: ProjectRef, user: UserRef, *, ref: str | None = None,
                  name: str = "build", timeout: int = 3600, status: str = "running",
                  pipeline: JobHandle | int | None = None,
                  variables: Mapping[str, Any] | None = None) -> JobHandle:
        """Start a job triggered by `user`; refused unless the user may run jobs there.

        Each job gets a new pipeline at `ref` (writing `refs/pipelines/<id>`), unless
        `pipeline` names one (an id, or a job whose pipeline to join). `variables` are
        the job's own (`{"NAME": "value"}` or `{"NAME": {"value": ..., "masked": True}}`).
        """
        spec = jobs.job_spec(variables=variables) if variables else None
        return self._create_job(project, user, ref=ref, name=name, timeout=timeout,
                                status=status, pipeline=pipeline, spec=spec)

    def queue_job(self, project: ProjectRef, user: UserRef, script: str | list[str], *,
                  ref: str | None = None, name: str = "build", stage: str = "test",
                  timeout: int = 3600, image: str | None = None,
                  variables: Mapping[str, Any] | None = None, tags: tuple[str, ...] = (),
                  needs: tuple[str, ...] = (), artifacts: Mapping[str, Any] | None = None,
                  pipeline: JobHandle | int | None = None) -> JobHandle:
        """Queue a job for a runner: pending (its token refused) until a runner takes it.

        `needs` names jobs of the same pipeline that must succeed first (their artifacts
        are the job's dependencies); `tags` pick runners as GitLab does.
        """
        spec = jobs.job_spec(script=script, image=image, variables=variables, tags=tags,
                             needs=needs, artifacts=artifacts)
        return self._create_job(project, user, ref=ref, name=name, stage=stage, timeout=timeout,
                                status=None, pipeline=pipeline, spec=spec)

    def _create_job(self, project: ProjectRef, user: UserRef, *, ref: str | None, name: str,
                    timeout: int, status: str | None, pipeline: JobHandle | int | None,
                    spec: dict[str, Any] | None, stage: str = "test") -> JobHandle:
        with self._session():
            joined = None
            if pipeline is not None:
                joined = jobs.get_pipeline(
                    pipeline.pipeline if isinstance(pipeline, JobHandle) else pipeline)
            job, token = jobs.create_job(
                self.now(), self.state.backend, domain.get_project(_path(project)),
                domain.get_user(_name(user)), ref=ref, name=name, stage=stage, timeout=timeout,
                status=status, pipeline=joined, spec=spec, seal=self.state.seal)
            variables = jobs.job_variables(job, token, self.url, self.state.config.registry_url,
                                           self.state.backend)
            if joined is None:  # a new refs/pipelines/<id>: its refs may want packing
                self.state.housekeeper.after_push(job.project_id)
            handle = JobHandle(job.id, token, job.project.full_path, job.user.username, variables,
                               job.pipeline_id)
        self._jobs[handle.id] = handle
        return handle

    def set_job_status(self, job: JobHandle | int, status: str) -> None:
        """Move a job to any GitLab status."""
        with self._session():
            job_id = job.id if isinstance(job, JobHandle) else job
            jobs.set_job_status(self.now(), jobs.get_job(job_id), status)

    def finish_job(self, job: JobHandle | int, status: str = "success") -> None:
        """Finish a job; its token dies for the very next request."""
        self.set_job_status(job, status)

    def job(self, job: JobHandle | int) -> dict[str, Any]:
        """Return a job as the control API shows it: status, failure_reason, exit_code, runner..."""
        from forge.control import job_json
        with self._session():
            return job_json(jobs.get_job(job.id if isinstance(job, JobHandle) else job),
                            state=self.state)

    def job_log(self, job: JobHandle | int) -> str:
        """Return the log a runner sent for the job (what `GET .../jobs/:id/trace` answers)."""
        from forge import runners
        with self._session():
            runners.fail_timed_out(self.now())
            found = jobs.get_job(job.id if isinstance(job, JobHandle) else job)
            return runners.job_log(found).decode("utf-8", "replace")

    def create_runner(self, *, tags: tuple[str, ...] = (), run_untagged: bool = True,
                      description: str = "test runner", paused: bool = False,
                      project: ProjectRef | None = None, group: str | None = None,
                      access_level: str = "not_protected") -> tuple[int, str]:
        """Create a runner directly (instance, or `project=` / `group=` scoped); return its
        id and authentication token (`glrt-...`), as `POST /api/v4/user/runners` would."""
        from forge import runners
        with self._session():
            kind = "project_type" if project is not None else "group_type" if group else "instance_type"
            runner, token = runners.create_runner(
                self.now(), runner_type=kind, description=description, tags=tags,
                run_untagged=run_untagged, paused=paused, access_level=access_level,
                project=domain.get_project(_path(project)) if project is not None else None,
                group=domain.get_group(group) if group else None)
            return runner.id, token

    def job_variables(self, job: JobHandle | int) -> dict[str, str]:
        """Return the CI_* variables of a job, as a runner would export them."""
        job = self._job_handle(job)
        with self._session():
            return jobs.job_variables(jobs.get_job(job.id), job.token, self.url,
                                      self.state.config.registry_url, self.state.backend)

    # -- URLs and the decision log -----------------------------------------------------

    def clone_url(self, project: ProjectRef, *, user: UserRef | None = None,
                  job: JobHandle | int | None = None, token: str | None = None,
                  username: str = "oauth2", password: bool = False) -> str:
        """Return a clone URL with credentials: a job's token, a user's PAT or password, or none.

        `user` and `job` may be names and ids of users and jobs this test created."""
        user = self._user_handle(user) if user is not None else None
        job = self._job_handle(job) if job is not None else None
        path = project.path if isinstance(project, ProjectHandle) else str(project)
        if isinstance(project, int):
            with self._session():
                path = domain.get_project(project).full_path
        netloc = urlsplit(self.url).netloc
        if job is not None:
            creds = f"gitlab-ci-token:{quote(job.token, safe='')}@"
        elif user is not None and password:
            creds = f"{quote(user.username, safe='')}:{quote(user.password or '', safe='')}@"
        elif user is not None or token is not None:
            secret = token or (user.token if user else None) or ""
            creds = f"{quote(username, safe='')}:{quote(secret, safe='')}@"
        else:
            creds = ""
        return f"http://{creds}{netloc}/{path}.git"

    def repository_path(self, project: ProjectRef) -> Path:
        """Return the project's bare repository on disk, once background housekeeping is
        done with every push so far: `git fsck` there sees no pack being dropped."""
        self.state.housekeeper.wait_idle(60)
        with self._session():
            return self.state.backend.path_for(domain.get_project(_path(project)).id)

    def events(self, since: int = 0, **filters: Any) -> list[dict[str, Any]]:
        """Return the decision log, oldest first, optionally filtered by field values."""
        with self._session():
            return events.page(since, None, **filters).events

    def last_event(self, **filters: Any) -> dict[str, Any]:
        """Return the newest decision matching `filters`; fail if there is none."""
        events = self.events(**filters)
        if not events:
            raise LookupError(f"no decision in the log matches {filters}")
        return events[-1]

    def denials(self) -> list[dict[str, Any]]:
        """Return every refused decision, oldest first."""
        return self.events(allowed=False)
