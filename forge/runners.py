"""Runners and the jobs they take: registration, the queue, logs, artifacts and timeouts.

Like `forge.jobs`, these functions act on the session and raise `DomainError`; the
caller commits. Which runner may take which job is `forge.permissions.runner_may_take`.
A job's life: queued `pending` (its token refused), taken by a runner (`running`: its
token works), ended by the runner's final update or, past its timeout, by the forge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from forge import permissions as perm
from forge.domain import USER_NAMESPACE_BASE, DomainError, digest, namespace_group_ids, same_digest
from forge.jobs import commit_facts, is_runner_job, protected_ref, set_job_status, variables
from forge.models import Group, Job, JobArtifact, JobLog, Project, Runner, User, db
from forge.repos import BlobStore, RepositoryBackend
from forge.tokens import new_runner_token

GIT_DEPTH = 20  # GitLab's default "Git shallow clone" project setting
FAILURE_REASONS = ("unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
                   "runner_system_failure", "missing_dependency_failure", "runner_unsupported",
                   "job_execution_timeout", "archived_failure", "unmet_prerequisites",
                   "scheduler_failure", "data_integrity_failure", "image_pull_failure",
                   "trace_size_exceeded", "user_blocked")
MAX_INT = 2**31 - 1  # GitLab's integer columns
TIMEOUT_MESSAGE = "ERROR: Job failed: execution took longer than {limit} seconds (forge)\n"


def create_runner(now: datetime, *, runner_type: str = "instance_type", group: Group | None = None,
                  project: Project | None = None, description: str = "",
                  tags: Sequence[str] = (), run_untagged: bool | None = None,
                  paused: bool = False, locked: bool = False, access_level: str = "not_protected",
                  maximum_timeout: int | None = None, creator: User | None = None,
                  info: dict[str, Any] | None = None) -> tuple[Runner, str]:
    """Create a runner; return it with its authentication token, which is not stored.

    `run_untagged` defaults to true; a runner without tags must run untagged jobs
    (GitLab's validation).
    """
    if runner_type not in perm.RUNNER_TYPES:
        raise DomainError(f"runner_type does not have a valid value; use one of "
                          f"{', '.join(perm.RUNNER_TYPES)}")
    if access_level not in perm.RUNNER_ACCESS_LEVELS:
        raise DomainError("access_level does not have a valid value")
    if runner_type == "group_type" and group is None:
        raise DomainError("group_id is missing")
    if runner_type == "project_type" and project is None:
        raise DomainError("project_id is missing")
    tag_list = sorted({tag.strip() for tag in tags if tag.strip()})
    untagged = True if run_untagged is None else run_untagged
    if not tag_list and not untagged:
        raise DomainError("tags list can not be empty when runner is not allowed to pick untagged jobs")
    if maximum_timeout is not None and maximum_timeout < 600:
        raise DomainError("maximum_timeout should be greater than or equal to 600 seconds")
    if maximum_timeout is not None and maximum_timeout > MAX_INT:
        raise DomainError("maximum_timeout is invalid")
    if len(description) > 1024 or any(len(tag) > 255 for tag in tag_list):
        raise DomainError("description is too long (maximum is 1024 characters), or a tag "
                          "(maximum is 255)")
    token = new_runner_token()
    runner = Runner(token_digest=digest(token), runner_type=runner_type,
                    group_id=group.id if group else None, project_id=project.id if project else None,
                    description=description, tags=tag_list, run_untagged=untagged, paused=paused,
                    locked=locked, access_level=access_level, maximum_timeout=maximum_timeout,
                    creator_id=creator.id if creator else None, info=info, created_at=now)
    db.session.add(runner)
    db.session.flush()
    return runner, token


def find_runner(token: str) -> Runner | None:
    """The runner whose authentication token this is, if any."""
    if not token:
        return None
    runner = db.session.scalar(select(Runner).where(Runner.token_digest == digest(token)))
    return runner if runner is not None and same_digest(runner.token_digest, token) else None


def runner_facts(runner: Runner) -> perm.Runner:
    """Describe a runner to the permission rules."""
    return perm.Runner(id=runner.id, runner_type=runner.runner_type, group_id=runner.group_id,
                       project_id=runner.project_id, tags=frozenset(runner.tags or ()),
                       run_untagged=runner.run_untagged, paused=runner.paused,
                       ref_protected_only=runner.access_level == "ref_protected")


def queued_facts(job: Job) -> perm.QueuedJob:
    """Describe a pending job to the permission rules."""
    spec = job.spec or {}
    tag = bool(job.pipeline and job.pipeline.tag)
    return perm.QueuedJob(id=job.id, project_id=job.project_id,
                          project_group_ids=namespace_group_ids(job.project),
                          status=job.status, tags=frozenset(spec.get("tags") or ()),
                          protected_ref=protected_ref(job.project, job.ref, tag),
                          user_state=job.user.state)


def heartbeat(now: datetime, runner: Runner, info: Any) -> None:
    """Note that the runner called, and what it says about itself."""
    runner.contacted_at = now
    if isinstance(info, dict):
        runner.info = {key: info.get(key) for key in
                       ("name", "version", "revision", "platform", "architecture", "executor", "shell")
                       if isinstance(info.get(key), str)}


# -- logs -----------------------------------------------------------------------------

def job_log(job: Job) -> bytes:
    """The job's log as the runner sent it (empty before it sent any)."""
    row = db.session.get(JobLog, job.id)
    return row.content if row is not None else b""


def log_secrets(job: Job, token: str) -> list[bytes]:
    """What the job's log must never show: its token and its masked variables' values."""
    values = [token] + [str(own["value"]) for own in (job.spec or {}).get("variables") or []
                        if own.get("masked")]
    return [value.encode() for value in values if value]


def hide_secrets(data: bytes, secrets: Sequence[bytes]) -> bytes:
    """GitLab's `Ci::Build#hide_secrets`: each secret becomes as many `x`s, so the log keeps
    the length the runner counts its offsets in."""
    for secret in secrets:
        data = data.replace(secret, b"x" * len(secret))
    return data


TRACE_SIZE_LIMIT_MB = 100  # GitLab's default plan limit `ci_jobs_trace_size_limit`


def trace_too_large(start: int, data: bytes) -> bool:
    """Whether a patch would bring the log to GitLab's size limit (whole megabytes count)."""
    return (start + len(data)) // (1 << 20) >= TRACE_SIZE_LIMIT_MB


def append_log(job: Job, start: int, data: bytes, secrets: Sequence[bytes] = ()) -> tuple[bool, int]:
    """Append `data` at byte `start`, `secrets` hidden; return whether it fit and the log's
    size after.

    Like GitLab, a patch must start exactly where the log ends; otherwise nothing is
    written and the caller answers 416 with the size. A secret the runner split between
    two patches is hidden too: the end of the log is searched again with the new data.
    """
    row = db.session.get(JobLog, job.id)
    if row is None:
        row = JobLog(job_id=job.id, content=b"")
        db.session.add(row)
    size = len(row.content)
    if start != size:
        return False, size
    overlap = max((len(secret) - 1 for secret in secrets), default=0)
    keep = max(size - overlap, 0)
    row.content = row.content[:keep] + hide_secrets(row.content[keep:] + data, secrets)
    return True, len(row.content)


# -- the queue ------------------------------------------------------------------------

def fail_timed_out(now: datetime) -> list[Job]:
    """Fail every running runner job past its timeout, as GitLab drops stuck jobs; its log
    says why. (Jobs a test runs itself stay as the test leaves them: their tokens are
    refused past the timeout all the same, as `job_timed_out`.)"""
    ended = []
    for job in db.session.scalars(select(Job).where(Job.status == "running",
                                                    Job.runner_id.is_not(None),
                                                    Job.started_at.is_not(None))):
        assert job.started_at is not None
        if (now - job.started_at).total_seconds() >= job.timeout:
            set_job_status(now, job, "failed")
            job.failure_reason = "job_execution_timeout"
            text = TIMEOUT_MESSAGE.format(limit=job.timeout).encode()
            append_log(job, len(job_log(job)), text)
            ended.append(job)
    return ended


def _needs_state(job: Job) -> str:
    """`ready` when every job it needs succeeded, `waiting` while one runs or waits,
    `failed` when one ended otherwise (the job is then skipped, as on GitLab)."""
    for need in (job.spec or {}).get("needs") or []:
        other = _needed(job, need)
        if other is None or other.status in ("failed", "canceled", "skipped"):
            return "failed"
        if other.status != "success":
            return "waiting"
    return "ready"


def _needed(job: Job, name: str) -> Job | None:
    return db.session.scalars(select(Job).where(
        Job.pipeline_id == job.pipeline_id, Job.name == name, Job.id != job.id)
        .order_by(Job.id.desc())).first()


@dataclass(frozen=True)
class Taken:
    """A job a runner took, with the token to hand it."""

    job: Job
    token: str
    decision: perm.Decision  # why the runner could take it


def take_job(now: datetime, runner: Runner, unseal: Callable[[str], str]) -> Taken | None:
    """Give the runner the oldest pending job it may run, now `running`; None when none.

    The move from pending to running is a compare-and-swap on the status, so two
    runners asking at once never take the same job.
    """
    facts = runner_facts(runner)
    pending = db.session.scalars(select(Job).where(Job.status == "pending", Job.spec.is_not(None))
                                 .order_by(Job.id))
    for job in list(pending):
        if not is_runner_job(job.spec) or job.sealed_token is None:
            continue
        state = _needs_state(job)
        if state == "failed":
            set_job_status(now, job, "skipped")
            continue
        if state == "waiting":
            continue
        decision = perm.runner_may_take(facts, queued_facts(job))
        if decision.reason == "user_blocked":
            set_job_status(now, job, "failed")
            job.failure_reason = "user_blocked"
            continue
        if not decision.allowed:
            continue
        timeout = min(job.timeout, runner.maximum_timeout or job.timeout)
        sealed = job.sealed_token
        moved = db.session.execute(update(Job).where(Job.id == job.id, Job.status == "pending").values(
            status="running", started_at=now, runner_id=runner.id, timeout=timeout, sealed_token=None))
        if getattr(moved, "rowcount", 0) != 1:
            continue  # another runner took it
        token = unseal(sealed)
        db.session.refresh(job)
        return Taken(job, token, decision)
    return None


def finish_job(now: datetime, job: Job, state: str, *, exit_code: int | None = None,
               failure_reason: str | None = None) -> None:
    """The runner's final word: `success` or `failed` (with why); `running` is a heartbeat."""
    if state == "running" or not state:
        return
    if state not in ("success", "failed"):
        raise DomainError(f"state does not have a valid value: {state!r}")
    set_job_status(now, job, state)
    job.exit_code = exit_code
    if state == "failed":
        job.failure_reason = failure_reason if failure_reason in FAILURE_REASONS else "unknown_failure"


# -- artifacts ------------------------------------------------------------------------

# Ci::JobArtifact.file_types and file_formats: what `artifact_type` and `artifact_format` may be
ARTIFACT_TYPES = (
    "archive", "metadata", "trace", "junit", "sast", "dependency_scanning", "container_scanning",
    "dast", "codequality", "license_scanning", "performance", "metrics", "metrics_referee",
    "network_referee", "lsif", "dotenv", "cobertura", "terraform", "accessibility",
    "cluster_applications", "secret_detection", "requirements", "coverage_fuzzing",
    "browser_performance", "load_performance", "api_fuzzing", "cluster_image_scanning",
    "cyclonedx", "requirements_v2", "annotations", "repository_xray", "jacoco")
ARTIFACT_FORMATS = ("raw", "zip", "gzip")


class ArtifactExists(DomainError):
    """The job already has another file of that artifact type."""


def add_artifact(now: datetime, job: Job, filename: str, sha256: str, size: int, *,
                 file_type: str = "archive", file_format: str = "zip") -> JobArtifact:
    """Record an uploaded artifacts file (stored by content hash); one per type per job.

    As on GitLab, uploading the same file again (a runner's retry) succeeds, another file
    of the same type is refused.
    """
    existing: JobArtifact | None = db.session.scalar(select(JobArtifact).where(
        JobArtifact.job_id == job.id, JobArtifact.file_type == file_type))
    if existing is not None:
        if existing.sha256 == sha256:
            return existing
        raise ArtifactExists("another artifact of the same type already exists")
    artifact = JobArtifact(job_id=job.id, file_type=file_type, file_format=file_format,
                           filename=filename, size=size, sha256=sha256, created_at=now)
    db.session.add(artifact)
    db.session.flush()
    return artifact


def archive(job: Job) -> JobArtifact | None:
    """The job's artifacts archive, if it uploaded one."""
    return db.session.scalar(select(JobArtifact).where(JobArtifact.job_id == job.id,
                                                       JobArtifact.file_type == "archive"))


# -- the job as a runner receives it ---------------------------------------------------

def payload(job: Job, token: str, runner: Runner, *, base_url: str, registry: str,
            backend: RepositoryBackend, store: BlobStore | None = None) -> dict[str, Any]:
    """The body of `POST /jobs/request`'s 201, as GitLab's `JobRequest::Response` renders it
    (the fields of gitlab-runner's `spec.Job`)."""
    project, pipeline, spec = job.project, job.pipeline, job.spec or {}
    assert pipeline is not None
    url = urlsplit(base_url)
    repo_url = f"{url.scheme}://gitlab-ci-token:{token}@{url.netloc}/{project.full_path}.git"
    tag = bool(pipeline.tag)
    facts = commit_facts(backend, pipeline)
    refspecs = [f"+refs/pipelines/{pipeline.id}:refs/pipelines/{pipeline.id}"]
    refspecs.append(f"+refs/tags/{job.ref}:refs/tags/{job.ref}" if tag
                    else f"+refs/heads/{job.ref}:refs/remotes/origin/{job.ref}")
    root = project.full_path.split("/", 1)[0]
    root_group = db.session.scalar(select(Group.id).where(Group.full_path == root))
    personal = USER_NAMESPACE_BASE + (project.owner_id or 0)  # as GET /namespaces numbers it
    steps = [{"name": "script", "script": spec.get("script") or [], "timeout": job.timeout,
              "when": "on_success", "allow_failure": False}]
    if spec.get("after_script"):
        steps.append({"name": "after_script", "script": spec["after_script"], "timeout": 300,
                      "when": "always", "allow_failure": True})
    artifacts = None
    if spec.get("artifacts"):
        item = spec["artifacts"]
        artifacts = [{"name": item.get("name") or "", "untracked": item.get("untracked", False),
                      "paths": item.get("paths") or [], "exclude": item.get("exclude") or [],
                      "when": item.get("when") or "on_success", "expire_in": item.get("expire_in") or "",
                      "artifact_type": "archive", "artifact_format": "zip"}]
    dependencies = []
    for name in spec.get("needs") or []:
        other = _needed(job, name)
        if other is None:
            continue
        entry: dict[str, Any] = {"id": other.id, "name": other.name, "token": token}
        stored = archive(other)
        if stored is not None and (store is None or store.exists(stored.sha256)):
            entry["artifacts_file"] = {"filename": stored.filename, "size": stored.size}
        dependencies.append(entry)
    credentials = []
    if registry:
        credentials.append({"type": "registry", "url": registry, "username": "gitlab-ci-token",
                            "password": token})
    queued = (job.started_at - job.created_at).total_seconds() if job.started_at else 0.0
    return {
        "id": job.id,
        "token": token,
        "allow_git_fetch": True,
        "job_info": {
            "id": job.id, "name": job.name, "stage": job.stage, "pipeline_id": job.pipeline_id,
            "project_id": project.id, "project_name": project.name,
            "project_full_path": project.full_path,
            "namespace_id": project.group_id if project.group_id is not None else personal,
            "root_namespace_id": root_group if root_group is not None else personal,
            "organization_id": 1, "user_id": job.user_id, "scoped_user_id": None,
            "time_in_queue_seconds": queued, "project_jobs_running_on_instance_runners_count": "+Inf",
            "queue_size": 0, "queue_depth": 0,
        },
        "git_info": {
            "repo_url": repo_url, "repo_object_format": "sha1", "ref": job.ref, "sha": job.sha,
            "before_sha": facts.before_sha if facts else perm.ZERO_SHA,
            "ref_type": "tag" if tag else "branch", "refspecs": refspecs, "depth": GIT_DEPTH,
            "protected": protected_ref(project, job.ref, tag),
        },
        "runner_info": {"timeout": job.timeout, "runner_session_url": None},
        "variables": variables(job, token, base_url, registry, backend),
        "steps": steps,
        "image": {"name": spec["image"], "entrypoint": None, "ports": [], "pull_policy": None}
        if spec.get("image") else None,
        "services": [{"name": name, "entrypoint": None, "ports": [], "alias": None, "command": None,
                      "pull_policy": None, "variables": []} for name in spec.get("services") or []],
        "artifacts": artifacts,
        "cache": [],
        "credentials": credentials,
        "dependencies": dependencies,
        "features": {"trace_sections": True, "failure_reasons": list(FAILURE_REASONS)},
        "hooks": [],
    }
