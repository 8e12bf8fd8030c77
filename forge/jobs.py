"""Jobs and the pipelines they belong to: creation, status, tokens and CI_* variables.

Like `forge.domain`, these functions act on the session and raise `DomainError`; the
caller commits. A pipeline pins a commit (`refs/pipelines/<id>`); its jobs run for it.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import func, select

from forge import permissions as perm
from forge.domain import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    ancestor_ids,
    by_id,
    digest,
    new_job_token,
    project_facts,
    scope_links,
    user_facts,
)
from forge.models import Job, Pipeline, Project, User, db
from forge.repos import RepositoryBackend, compare_and_swap, current_ref, writing


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


def create_pipeline(now: datetime, backend: RepositoryBackend, project: Project, ref: str, *,
                    source: str = "push") -> Pipeline:
    """Create a pipeline for the commit `ref` names now, and its ref `refs/pipelines/<id>`.

    GitLab writes the pipeline ref so the runner can fetch exactly the pipeline's commit
    even after the branch moves on; it stays while the pipeline exists.
    """
    sha = backend.resolve(project.id, ref) if backend.exists(project.id) else ""
    iid = (db.session.scalar(select(func.max(Pipeline.iid)).where(
        Pipeline.project_id == project.id)) or 0) + 1
    pipeline = Pipeline(project_id=project.id, iid=iid, ref=ref, sha=sha, source=source,
                        created_at=now)
    db.session.add(pipeline)
    db.session.flush()
    if sha:
        with writing(backend.path_for(project.id)) as repo:
            name = f"refs/pipelines/{pipeline.id}".encode()
            if not compare_and_swap(repo, name, current_ref(repo, name), sha.encode()):
                raise DomainError(f"could not write refs/pipelines/{pipeline.id}")
    return pipeline


def job_facts(job: Job) -> perm.Job:
    """Describe `job` (and its project's outbound scope) to the permission rules."""
    project = job.project
    outbound = frozenset(
        link.source_project_id for link in scope_links(project, "outbound") if link.source_project_id)
    return perm.Job(
        id=job.id, project_id=project.id, project_path=project.path,
        project_group_ids=frozenset(ancestor_ids(project.group)), status=job.status,
        started_at=job.started_at, timeout=job.timeout,
        outbound_enabled=project.outbound_enabled, outbound_project_ids=outbound)


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
    status: str = "running",
    token: str | None = None,
    pipeline: Pipeline | None = None,
) -> tuple[Job, str]:
    """Create a job triggered by `user`; return it with its token, which is not stored.

    The job joins `pipeline`, or a new pipeline at `ref` (default: the default branch).
    Refused with Forbidden when the user may not run jobs in the project.
    """
    decision = perm.may_run_job(user_facts(user), project_facts(project, user))
    if not decision.allowed:
        raise Forbidden(decision.message)
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
        pipeline = create_pipeline(now, backend, project, ref or project.default_branch)
    elif pipeline.project_id != project.id:
        raise DomainError(f"pipeline {pipeline.id} belongs to another project")
    elif ref is not None and ref != pipeline.ref:
        raise DomainError(f"pipeline {pipeline.id} runs for {pipeline.ref!r}, not {ref!r}")
    job = Job(project=project, user=user, ref=pipeline.ref, sha=pipeline.sha, name=name,
              stage=stage, status=status, timeout=timeout, token_digest=digest(secret),
              created_at=now, pipeline_id=pipeline.id,
              started_at=now if status == "running" else None,
              finished_at=now if status in ("success", "failed", "canceled") else None)
    db.session.add(job)
    db.session.flush()
    return job, secret


def set_job_status(now: datetime, job: Job, status: str) -> None:
    """Move a job to `status`; leaving `running` kills its token at once."""
    if status not in perm.JOB_STATUSES:
        raise DomainError(f"unknown job status {status!r}; use one of {', '.join(perm.JOB_STATUSES)}")
    if status == "running" and job.started_at is None:
        job.started_at = now
    if status in ("success", "failed", "canceled", "skipped"):
        job.finished_at = now
    job.status = status


def job_variables(job: Job, token: str | None, base_url: str, registry: str = "") -> dict[str, str]:
    """Return the CI_* variables GitLab gives the job (spec section 6)."""
    project, user = job.project, job.user
    url = urlsplit(base_url)
    host = url.hostname or "localhost"
    port = url.port or (443 if url.scheme == "https" else 80)
    netloc = url.netloc
    namespace = project.full_path.rsplit("/", 1)[0]
    variables = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_JOB_ID": str(job.id),
        "CI_JOB_NAME": job.name,
        "CI_JOB_STAGE": job.stage,
        "CI_JOB_STATUS": job.status,
        "CI_JOB_URL": f"{base_url}/{project.full_path}/-/jobs/{job.id}",
        "CI_PIPELINE_ID": str(job.pipeline_id),
        "CI_PIPELINE_IID": str(job.pipeline.iid) if job.pipeline else str(job.pipeline_id),
        "CI_PIPELINE_SOURCE": job.pipeline.source if job.pipeline else "push",
        "CI_PROJECT_ID": str(project.id),
        "CI_PROJECT_PATH": project.full_path,
        "CI_PROJECT_NAME": project.path,
        "CI_PROJECT_NAMESPACE": namespace,
        "CI_PROJECT_URL": f"{base_url}/{project.full_path}",
        "CI_PROJECT_VISIBILITY": project.visibility,
        "CI_DEFAULT_BRANCH": project.default_branch,
        "CI_COMMIT_SHA": job.sha,
        "CI_COMMIT_REF_NAME": job.ref,
        "CI_COMMIT_BRANCH": job.ref,
        "CI_SERVER_URL": base_url,
        "CI_SERVER_HOST": host,
        "CI_SERVER_PORT": str(port),
        "CI_SERVER_PROTOCOL": url.scheme,
        "CI_API_V4_URL": f"{base_url}/api/v4",
        "GITLAB_USER_LOGIN": user.username,
        "GITLAB_USER_ID": str(user.id),
        "GITLAB_USER_EMAIL": user.email,
        "GITLAB_USER_NAME": user.name,
    }
    if token is not None:
        variables["CI_JOB_TOKEN"] = token
        variables["CI_REPOSITORY_URL"] = (
            f"{url.scheme}://gitlab-ci-token:{token}@{netloc}/{project.full_path}.git")
    if registry:
        variables["CI_REGISTRY"] = registry
        variables["CI_REGISTRY_IMAGE"] = f"{registry}/{project.full_path.lower()}"
        variables["CI_REGISTRY_USER"] = "gitlab-ci-token"
        if token is not None:
            variables["CI_REGISTRY_PASSWORD"] = token
    return variables
