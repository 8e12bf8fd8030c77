"""Jobs and the pipelines they belong to: creation, status, tokens and CI_* variables.

Like `forge.domain`, these functions act on the session and raise `DomainError`; the
caller commits. A pipeline pins a commit (`refs/pipelines/<id>`); its jobs run for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from dulwich.objects import Commit, Tag
from dulwich.refs import Ref
from sqlalchemy import bindparam, func, select

from forge import GITLAB_REVISION, GITLAB_VERSION
from forge import permissions as perm
from forge.domain import (
    USER_NAMESPACE_BASE,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    by_id,
    digest,
    namespace_group_ids,
    new_job_token,
    project_facts,
    user_facts,
)
from forge.models import Job, Pipeline, Project, ProtectedBranch, Runner, ScopeLink, User, db
from forge.repos import RepositoryBackend, compare_and_swap, current_ref, open_repo, writing
from forge.repository_ops import git_time


def get_job(job_id: int) -> Job:
    """Find a job by id, or raise NotFound."""
    job = by_id(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def get_pipeline(pipeline_id: int) -> Pipeline:
    """Find a pipeline by id, or raise NotFound."""
    pipeline = by_id(Pipeline, pipeline_id)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id} does not exist")
    return pipeline


def resolve_ref(backend: RepositoryBackend, project: Project, ref: str, *,
                allow_empty: bool = False) -> tuple[str, bool]:
    """Return the commit `ref` names (a branch, else a tag, peeled) and whether it is a tag.

    Refused as GitLab refuses a pipeline for a ref the repository lacks (`Reference not
    found`), and for a name that is both a branch and a tag (`Ref is ambiguous`).
    `allow_empty` lets the default branch of a repository without commits through, with
    no commit (""): forge's one leniency, for tests that run jobs needing no source.
    """
    found: dict[bool, str] = {}
    if backend.exists(project.id):
        with open_repo(backend.path_for(project.id)) as repo:
            refs = repo.refs.as_dict()
            for is_tag, prefix in ((False, "refs/heads/"), (True, "refs/tags/")):
                name = Ref(f"{prefix}{ref}".encode())
                if name in refs:
                    found[is_tag] = repo.get_peeled(name).decode()
    if len(found) == 2:
        raise DomainError(f"Ref is ambiguous: {ref!r} is both a branch and a tag of {project.full_path}")
    if not found:
        has_commits = _has_commits(backend, project)
        if allow_empty and not has_commits and ref == project.default_branch:
            return "", False
        empty = "" if has_commits else " (its repository is empty)"
        raise DomainError(f"Reference not found: {project.full_path} has no branch or tag {ref!r}{empty}")
    is_tag, sha = next(iter(found.items()))
    return sha, is_tag


def _has_commits(backend: RepositoryBackend, project: Project) -> bool:
    if not backend.exists(project.id):
        return False
    with open_repo(backend.path_for(project.id)) as repo:
        return any(name.startswith(b"refs/heads/") for name in repo.refs.as_dict())


def create_pipeline(now: datetime, backend: RepositoryBackend, project: Project, ref: str, *,
                    source: str = "push", allow_empty: bool = False) -> Pipeline:
    """Create a pipeline for the commit `ref` names now, and its ref `refs/pipelines/<id>`.

    GitLab writes the pipeline ref so the runner can fetch exactly the pipeline's commit
    even after the branch moves on; it stays while the pipeline exists.
    """
    sha, is_tag = resolve_ref(backend, project, ref, allow_empty=allow_empty)
    iid = (db.session.scalar(select(func.max(Pipeline.iid)).where(
        Pipeline.project_id == project.id)) or 0) + 1
    pipeline = Pipeline(project_id=project.id, iid=iid, ref=ref, sha=sha, source=source,
                        created_at=now, tag=is_tag)
    db.session.add(pipeline)
    db.session.flush()
    if sha:
        with writing(backend.path_for(project.id)) as repo:
            name = f"refs/pipelines/{pipeline.id}".encode()
            if not compare_and_swap(repo, name, current_ref(repo, name), sha.encode()):
                raise DomainError(f"could not write refs/pipelines/{pipeline.id}")
    return pipeline


_OUTBOUND_PROJECTS = select(ScopeLink.source_project_id).where(
    ScopeLink.project_id == bindparam("project"), ScopeLink.direction == "outbound")


def job_facts(job: Job) -> perm.Job:
    """Describe `job` (and its project's outbound scope) to the permission rules."""
    return _job_facts(job, job.project)


def _job_facts(job: Any, project: Any) -> perm.Job:
    """The facts of a job and its project, given as rows or as anything with their columns."""
    outbound = frozenset(source for source in db.session.scalars(
        _OUTBOUND_PROJECTS, {"project": project.id}) if source)
    return perm.Job(
        id=job.id, project_id=project.id, project_path=project.path,
        project_group_ids=namespace_group_ids(project),
        status=job.status,
        started_at=job.started_at, timeout=job.timeout,
        outbound_enabled=project.outbound_enabled, outbound_project_ids=outbound)


# Every git request with a job token starts here: one statement for the job, its user and
# its project, read as columns.
_JOB_PRINCIPAL = select(
    Job.id, Job.token_digest, Job.status, Job.started_at, Job.timeout,
    Project.id.label("project_id"), Project.path, Project.full_path, Project.group_id,
    Project.outbound_enabled,
    User.id.label("user_id"), User.username, User.admin, User.external, User.state,
).join(Project, Project.id == Job.project_id).join(User, User.id == Job.user_id).where(
    Job.token_digest == bindparam("digest"))


def job_principal(token_digest: str) -> tuple[str, perm.User, perm.Job] | None:
    """The job whose token has this digest: its stored digest, its user's and its facts."""
    row = db.session.execute(_JOB_PRINCIPAL, {"digest": token_digest}).first()
    if row is None:
        return None
    project = SimpleNamespace(id=row.project_id, path=row.path, full_path=row.full_path,
                              group_id=row.group_id, outbound_enabled=row.outbound_enabled)
    user = perm.User(row.user_id, row.username, row.admin, row.external, row.state)
    return row.token_digest, user, _job_facts(row, project)


# -- the job's definition, for runners ---------------------------------------------------

VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,255}$")
MASKABLE = re.compile(r"^[A-Za-z0-9+/=@:.~_-]{8,}$")  # GitLab's rule for values it can mask
ARTIFACT_WHEN = ("on_success", "on_failure", "always")


def job_spec(*, script: Sequence[str] | str | None = None, image: str | None = None,
             services: Sequence[str] = (), variables: Mapping[str, Any] | None = None,
             tags: Sequence[str] = (), needs: Sequence[str] = (),
             artifacts: Mapping[str, Any] | None = None, after_script: Sequence[str] = ()
             ) -> dict[str, Any]:
    """Check and normalise what a runner job runs; raise DomainError naming what is wrong.

    Without `script` the job is one a test runs itself, with only its `variables`.
    `variables` maps a name to a value, or to `{"value": ..., "masked": true}` (GitLab
    masks only values of 8 or more characters from its masking alphabet).
    """
    lines = [script] if isinstance(script, str) else list(script or [])
    if (script is not None and not lines) or not all(isinstance(line, str) for line in lines):
        raise DomainError("script: give a command or a list of commands")
    checked: list[dict[str, Any]] = []
    for name, raw in (variables or {}).items():
        if not isinstance(name, str) or not VARIABLE_NAME.match(name):
            raise DomainError(f"variables: invalid name {name!r}: use letters, digits and _")
        entry = dict(raw) if isinstance(raw, Mapping) else {"value": raw}
        unknown = set(entry) - {"value", "masked", "file", "raw"}
        if unknown:
            raise DomainError(f"variables.{name}: unknown key {', '.join(sorted(unknown))}")
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise DomainError(f"variables.{name}: the value must be a string")
        masked = bool(entry.get("masked", False))
        if masked and not MASKABLE.match(str(value)):
            raise DomainError(f"variables.{name}: a masked value must be at least 8 characters "
                              "of letters, digits and @:.~-_+/=, on one line (GitLab's rule)")
        checked.append({"key": name, "value": str(value), "masked": masked,
                        "file": bool(entry.get("file", False)), "raw": bool(entry.get("raw", False))})
    for label, items in (("tags", tags), ("needs", needs), ("services", services),
                         ("after_script", after_script)):
        if isinstance(items, str) or not all(isinstance(item, str) and item for item in items):
            raise DomainError(f"{label}: give a list of names")
    if image is not None and (not isinstance(image, str) or not image):
        raise DomainError("image: give an image name")
    spec: dict[str, Any] = {"script": lines, "image": image, "services": list(services),
                            "variables": checked, "tags": sorted(set(tags)), "needs": list(needs),
                            "after_script": list(after_script), "artifacts": None}
    if artifacts:
        unknown = set(artifacts) - {"paths", "when", "expire_in", "name", "exclude", "untracked"}
        if unknown:
            raise DomainError(f"artifacts: unknown key {', '.join(sorted(unknown))}")
        paths = artifacts.get("paths") or []
        if isinstance(paths, str) or not all(isinstance(path, str) for path in paths):
            raise DomainError("artifacts.paths: give a list of paths")
        when = artifacts.get("when", "on_success")
        if when not in ARTIFACT_WHEN:
            raise DomainError(f"artifacts.when: use one of {', '.join(ARTIFACT_WHEN)}")
        spec["artifacts"] = {"paths": list(paths), "when": when,
                             "expire_in": str(artifacts.get("expire_in") or ""),
                             "name": str(artifacts.get("name") or ""),
                             "exclude": list(artifacts.get("exclude") or []),
                             "untracked": bool(artifacts.get("untracked", False))}
    return spec


def create_job(
    now: datetime,
    backend: RepositoryBackend,
    project: Project,
    user: User,
    *,
    ref: str | None = None,
    name: str = "build",
    stage: str = "test",
    timeout: int = 3600,
    status: str | None = None,
    token: str | None = None,
    pipeline: Pipeline | None = None,
    spec: dict[str, Any] | None = None,
    seal: Callable[[str], str] | None = None,
) -> tuple[Job, str]:
    """Create a job triggered by `user`; return it with its token, which is not stored.

    The job joins `pipeline`, or a new pipeline at `ref` (default: the default branch),
    which must name a branch or tag. A job with a `spec` (see `job_spec`) waits, pending,
    for a runner; its token is kept sealed (`seal`) for the runner that takes it. Other
    jobs are running unless `status` says otherwise. Refused with Forbidden when the user
    may not run jobs in the project.
    """
    decision = perm.may_run_job(user_facts(user), project_facts(project, user))
    if not decision.allowed:
        raise Forbidden(decision.message)
    for_runner = is_runner_job(spec)
    status = status or ("pending" if for_runner else "running")
    if status not in perm.JOB_STATUSES:
        raise DomainError(f"unknown job status {status!r}; use one of {', '.join(perm.JOB_STATUSES)}")
    if timeout <= 0:
        raise DomainError("job timeout must be a positive number of seconds")
    secret = token or new_job_token()
    if not secret.startswith("glcbt-"):
        raise DomainError("job tokens start with 'glcbt-'")
    if db.session.scalar(select(Job).where(Job.token_digest == digest(secret))) is not None:
        raise Conflict("that job token is already in use")
    if pipeline is None:
        pipeline = create_pipeline(now, backend, project, ref or project.default_branch,
                                   allow_empty=not for_runner)
    elif pipeline.project_id != project.id:
        raise DomainError(f"pipeline {pipeline.id} belongs to another project")
    elif ref is not None and ref != pipeline.ref:
        raise DomainError(f"pipeline {pipeline.id} runs for {pipeline.ref!r}, not {ref!r}")
    sealed = None
    if for_runner and not pipeline.sha:
        raise DomainError(f"Reference not found: {project.full_path} has no commit for a runner to check out")
    if spec is not None and for_runner:
        if seal is None:
            raise DomainError("a runner job needs the forge's secret key to keep its token")
        known = set(db.session.scalars(select(Job.name).where(Job.pipeline_id == pipeline.id)))
        missing = [need for need in spec.get("needs") or [] if need not in known]
        if missing:
            raise DomainError(f"needs: pipeline {pipeline.id} has no job {missing[0]!r} "
                              "(queue the jobs it needs first)")
        if status == "pending":
            sealed = seal(secret)
    job = Job(project=project, user=user, ref=pipeline.ref, sha=pipeline.sha, name=name,
              stage=stage, status=status, timeout=timeout, token_digest=digest(secret),
              created_at=now, pipeline_id=pipeline.id, spec=spec, sealed_token=sealed,
              started_at=now if status == "running" else None,
              finished_at=now if status in FINISHED else None)
    db.session.add(job)
    db.session.flush()
    return job, secret


FINISHED = ("success", "failed", "canceled", "skipped")


def is_runner_job(spec: Mapping[str, Any] | None) -> bool:
    """Whether a job waits for a runner (it has a script) rather than for the test."""
    return bool(spec and spec.get("script"))


def set_job_status(now: datetime, job: Job, status: str) -> None:
    """Move a job to `status`; leaving `running` kills its token at once."""
    if status not in perm.JOB_STATUSES:
        raise DomainError(f"unknown job status {status!r}; use one of {', '.join(perm.JOB_STATUSES)}")
    if status == "running" and job.started_at is None:
        job.started_at = now
    if status in FINISHED:
        job.finished_at = now
        job.sealed_token = None
    job.status = status


# -- CI_* variables ------------------------------------------------------------------------

ZERO_SHA = "0" * 40


def slugify(value: str) -> str:
    """GitLab's slug (`Gitlab::Utils.slugify`): lower case, anything but a-z0-9 to `-`,
    at most 63 characters, no `-` at either end."""
    return re.sub(r"[^a-z0-9]", "-", value.lower())[:63].strip("-")


PARALLEL_SUFFIX = re.compile(r"([\b\s:]+((\[.*\])|(\d+[\s:/\\]+\d+))){1,3}\s*\Z")


def group_name(name: str) -> str:
    """GitLab's `CommitStatus#group_name`: the job's name without the suffix `parallel:`
    gives it (`rspec 1/3`, `rspec: [ruby, ubuntu]`)."""
    return PARALLEL_SUFFIX.sub("", name).strip()


def iso8601(value: datetime) -> str:
    """A naive UTC time as GitLab's variables write it: `2022-01-31T16:47:55Z`."""
    return value.replace(microsecond=0).isoformat() + "Z"


@dataclass(frozen=True)
class CommitFacts:
    """What the CI_COMMIT_* variables say about a pipeline's commit."""

    message: str
    author: str
    timestamp: str
    before_sha: str
    tag_message: str | None  # for a tag pipeline: the annotated tag's message ("" if lightweight)


def commit_facts(backend: RepositoryBackend, pipeline: Pipeline) -> CommitFacts | None:
    """Read the pipeline's commit (and tag), or None when it is gone."""
    if not pipeline.sha or not backend.exists(pipeline.project_id):
        return None
    with open_repo(backend.path_for(pipeline.project_id)) as repo:
        try:
            commit = repo[pipeline.sha.encode()]
        except KeyError:
            return None
        if not isinstance(commit, Commit):
            return None
        tag_message = None
        if pipeline.tag:
            tag_message = ""
            target = repo.refs.as_dict().get(Ref(f"refs/tags/{pipeline.ref}".encode()))
            tag = repo[target] if target is not None else None
            if isinstance(tag, Tag):
                tag_message = tag.message.decode("utf-8", "replace").rstrip("\n")
        # GitLab reads the committer date with its own offset (Gitlab::Git::Commit's
        # init_date_from_gitaly) and writes it with Time#xmlschema: 2022-01-31T18:47:55+02:00
        when = git_time(commit.commit_time, commit.commit_timezone)
        return CommitFacts(
            message=commit.message.decode("utf-8", "replace"),
            author=commit.author.decode("utf-8", "replace"),
            timestamp=when.isoformat(),
            # GitLab's before_sha is the ref's previous value at the push: for a branch
            # pushed one commit at a time, the commit's parent (zeros for a first commit);
            # for a tag, which a push creates, zeros.
            before_sha=commit.parents[0].decode() if commit.parents and not pipeline.tag
            else ZERO_SHA,
            tag_message=tag_message)


def _title_and_description(message: str) -> tuple[str, str]:
    """CI_COMMIT_TITLE is the first line (`Commit#full_title`); CI_COMMIT_DESCRIPTION
    (`Commit#description`) what follows the first newline with one line ending chomped
    (a blank line after the title stays), or the whole message when the title has 100
    characters or more."""
    title = re.split(r"[\r\n]", message, maxsplit=1)[0]
    if len(title) >= 100:
        return title, message
    rest = message.split("\n", 1)[1] if "\n" in message else ""
    return title, rest.removesuffix("\n").removesuffix("\r")


def variables(job: Job, token: str | None, base_url: str, registry: str,
              backend: RepositoryBackend) -> list[dict[str, Any]]:
    """The job's variables as a runner receives them: predefined first, then the job's own.

    Each is `{"key", "value", "public", "masked", "file", "raw"}`; secrets are not public.
    """
    project, user, pipeline = job.project, job.user, job.pipeline
    url = urlsplit(base_url)
    host = url.hostname or "localhost"
    port = url.port or (443 if url.scheme == "https" else 80)
    default_port = port == (443 if url.scheme == "https" else 80)
    namespace = project.full_path.rsplit("/", 1)[0]
    project_url = f"{base_url}/{project.full_path}"
    out: dict[str, str] = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_SERVER": "yes",
        "CI_SERVER_NAME": "GitLab",
        "CI_SERVER_VERSION": GITLAB_VERSION,
        "CI_SERVER_VERSION_MAJOR": GITLAB_VERSION.split(".")[0],
        "CI_SERVER_VERSION_MINOR": GITLAB_VERSION.split(".")[1],
        "CI_SERVER_VERSION_PATCH": GITLAB_VERSION.split(".")[2],
        "CI_SERVER_REVISION": GITLAB_REVISION,
        "CI_SERVER_URL": base_url,
        "CI_SERVER_HOST": host,
        "CI_SERVER_PORT": str(port),
        "CI_SERVER_PROTOCOL": url.scheme,
        "CI_SERVER_FQDN": host if default_port else f"{host}:{port}",
        "CI_SERVER_SHELL_SSH_HOST": host,
        "CI_SERVER_SHELL_SSH_PORT": "22",
        "CI_API_V4_URL": f"{base_url}/api/v4",
        "CI_API_GRAPHQL_URL": f"{base_url}/api/graphql",
        "CI_TEMPLATE_REGISTRY_HOST": "registry.gitlab.com",  # GitLab's default
        "GITLAB_FEATURES": "",
        "CI_JOB_ID": str(job.id),
        "CI_JOB_NAME": job.name,
        "CI_JOB_NAME_SLUG": slugify(job.name),
        "CI_JOB_GROUP_NAME": group_name(job.name),
        "CI_JOB_STAGE": job.stage,
        "CI_JOB_STATUS": job.status,
        "CI_JOB_URL": f"{project_url}/-/jobs/{job.id}",
        "CI_JOB_TIMEOUT": str(job.timeout),
        "CI_NODE_TOTAL": "1",
        "CI_PIPELINE_ID": str(job.pipeline_id),
        "CI_PIPELINE_IID": str(pipeline.iid) if pipeline else str(job.pipeline_id),
        "CI_PIPELINE_SOURCE": pipeline.source if pipeline else "push",
        "CI_PIPELINE_URL": f"{project_url}/-/pipelines/{job.pipeline_id}",
        "CI_CONFIG_PATH": ".gitlab-ci.yml",
        "CI_PROJECT_ID": str(project.id),
        "CI_PROJECT_NAME": project.path,
        "CI_PROJECT_TITLE": project.name,
        "CI_PROJECT_DESCRIPTION": project.description or "",
        "CI_PROJECT_TOPICS": "",  # forge projects have no topics
        "CI_PROJECT_PATH": project.full_path,
        "CI_PROJECT_PATH_SLUG": slugify(project.full_path),
        "CI_PROJECT_NAMESPACE": namespace,
        "CI_PROJECT_NAMESPACE_SLUG": slugify(namespace),
        "CI_PROJECT_NAMESPACE_ID": str(project.group_id if project.group_id is not None
                                       else USER_NAMESPACE_BASE + (project.owner_id or 0)),
        "CI_PROJECT_ROOT_NAMESPACE": namespace.split("/", 1)[0],
        "CI_PROJECT_URL": project_url,
        "CI_PROJECT_VISIBILITY": project.visibility,
        "CI_DEFAULT_BRANCH": project.default_branch,
        "CI_DEFAULT_BRANCH_SLUG": slugify(project.default_branch),
    }
    if job.started_at is not None:
        out["CI_JOB_STARTED_AT"] = iso8601(job.started_at)
    if pipeline is not None:
        out["CI_PIPELINE_CREATED_AT"] = iso8601(pipeline.created_at)
    if job.sha:
        out.update({"CI_COMMIT_SHA": job.sha, "CI_COMMIT_SHORT_SHA": job.sha[:8],
                    "CI_COMMIT_REF_NAME": job.ref, "CI_COMMIT_REF_SLUG": slugify(job.ref)})
        is_tag = bool(pipeline and pipeline.tag)
        if not is_tag:
            out["CI_COMMIT_BRANCH"] = job.ref
        facts = commit_facts(backend, pipeline) if pipeline is not None else None
        if facts is not None:
            title, description = _title_and_description(facts.message)
            out.update({"CI_COMMIT_BEFORE_SHA": facts.before_sha, "CI_COMMIT_MESSAGE": facts.message,
                        "CI_COMMIT_TITLE": title, "CI_COMMIT_DESCRIPTION": description,
                        "CI_COMMIT_TIMESTAMP": facts.timestamp, "CI_COMMIT_AUTHOR": facts.author})
            if facts.tag_message is not None:
                out.update({"CI_COMMIT_TAG": job.ref, "CI_COMMIT_TAG_MESSAGE": facts.tag_message})
        out["CI_COMMIT_REF_PROTECTED"] = "true" if protected_ref(project, job.ref, is_tag) else "false"
    if job.runner_id is not None:
        runner = db.session.get(Runner, job.runner_id)
        if runner is not None:
            out.update({"CI_RUNNER_ID": str(runner.id), "CI_RUNNER_DESCRIPTION": runner.description,
                        # Ruby's Array#to_s of the tag list: `["docker", "linux"]`
                        "CI_RUNNER_TAGS": json.dumps(list(runner.tags or []))})
    out.update({"GITLAB_USER_ID": str(user.id), "GITLAB_USER_EMAIL": user.email,
                "GITLAB_USER_LOGIN": user.username, "GITLAB_USER_NAME": user.name})
    listed = [{"key": key, "value": value, "public": True, "masked": False, "file": False,
               "raw": False} for key, value in out.items()]
    secret = {"public": False, "masked": True, "file": False, "raw": False}
    if token is not None:
        listed.insert(listed.index(next(v for v in listed if v["key"] == "CI_JOB_URL")),
                      {"key": "CI_JOB_TOKEN", "value": token, **secret})
        listed.append({"key": "CI_REPOSITORY_URL", "public": False, "masked": False, "file": False,
                       "raw": False, "value": f"{url.scheme}://gitlab-ci-token:{token}@{url.netloc}/"
                                              f"{project.full_path}.git"})
    if registry:
        listed += [{"key": "CI_REGISTRY", "value": registry, **_public()},
                   {"key": "CI_REGISTRY_IMAGE", "value": f"{registry}/{project.full_path.lower()}",
                    **_public()},
                   {"key": "CI_REGISTRY_USER", "value": "gitlab-ci-token", **_public()}]
        if token is not None:
            listed.append({"key": "CI_REGISTRY_PASSWORD", "value": token, **secret})
    for own in (job.spec or {}).get("variables") or []:
        listed.append({"key": own["key"], "value": own["value"], "public": False,
                       "masked": own.get("masked", False), "file": own.get("file", False),
                       "raw": own.get("raw", False)})
    return listed


def _public() -> dict[str, bool]:
    return {"public": True, "masked": False, "file": False, "raw": False}


def protected_ref(project: Project, ref: str, is_tag: bool) -> bool:
    """Whether a branch is protected (forge has no protected tags)."""
    if is_tag:
        return False
    rules = db.session.scalars(select(ProtectedBranch).where(ProtectedBranch.project_id == project.id))
    return any(perm.ProtectedBranch(r.name, r.push_access_level, r.allow_force_push).matches(ref)
               for r in rules)


def job_variables(job: Job, token: str | None, base_url: str, registry: str,
                  backend: RepositoryBackend) -> dict[str, str]:
    """Return the CI_* variables GitLab gives the job (spec section 6), and the job's own,
    as the environment a runner exports (a later name overrides an earlier one)."""
    return {v["key"]: v["value"] for v in variables(job, token, base_url, registry, backend)}
