"""The permission matrix, over the pure module only: every rule of spec sections 1 and 2."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from forge import permissions as perm
from forge.permissions import Action, Kind

NOW = datetime(2026, 11, 22, 12, 0, 0)
BASE = "http://forge.test"
# GitLab's exact words (spec sections 1, 2 and 3), written out so a changed message fails.
DENIED_401 = (
    "HTTP Basic: Access denied. If a password was provided for Git authentication, the password "
    "was incorrect or you're required to use a token instead of a password. If a token was "
    "provided, it was either incorrect, expired, or improperly scoped. See "
    "http://forge.test/help/topics/git/troubleshooting_git.md#error-on-git-fetch-http-basic-access-denied"
)
NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."
DOWNLOAD = "You are not allowed to download code from this project."
PUSH = "You are not allowed to push code to this project."
AUTH_DOWNLOAD = "You are not allowed to download code."
AUTH_UPLOAD = "You are not allowed to upload code."
NO_REPOSITORY = "A repository for this project does not exist yet."
# lib/gitlab/checks/branch_check.rb
PUSH_PROTECTED = "You are not allowed to push code to protected branches on this project."
CREATE_PROTECTED = "You are not allowed to create protected branches on this project."
FORCE_PUSH_PROTECTED = "You are not allowed to force push code to a protected branch on this project."
DELETE_PROTECTED = "You can only delete protected branches using the web interface."
DELETE_DEFAULT = "The default branch of a project cannot be deleted."
DELETE_PROTECTED_ROLE = ("You are not allowed to delete protected branches from this project. "
                         "Only a project maintainer or owner can delete a protected branch.")

# The job's own project is #1 (path `app`) in group 10 (`acme`), itself in group 1 (`top`).
JOB_PROJECT_ID, JOB_GROUPS = 1, frozenset({10, 1})
TARGET_ID = 7


def user(**kw: object) -> perm.User:
    return perm.User(id=5, username="bob", **kw)  # type: ignore[arg-type]


def job(**kw: object) -> perm.Job:
    base = dict(id=99, project_id=JOB_PROJECT_ID, project_path="app",
                project_group_ids=JOB_GROUPS, status="running",
                started_at=NOW - timedelta(minutes=5), timeout=3600)
    base.update(kw)
    return perm.Job(**base)  # type: ignore[arg-type]


def job_principal(u: perm.User | None = None, **job_kw: object) -> perm.Principal:
    return perm.Principal(Kind.JOB, user=u or user(), job=job(**job_kw))


def target(visibility: str = "private", role: int = perm.NO_ACCESS, **kw: object) -> perm.Project:
    base = dict(id=TARGET_ID, path="lib", full_path="top/acme/lib", visibility=visibility,
                role=role)
    base.update(kw)
    return perm.Project(**base)  # type: ignore[arg-type]


def own(visibility: str = "private", role: int = perm.DEVELOPER, **kw: object) -> perm.Project:
    return target(visibility, role, id=JOB_PROJECT_ID, path="app", full_path="top/acme/app", **kw)


SCOPE_DENIED = "Authentication by CI/CD job token not allowed from app to project #7."
INSUFFICIENT = "Insufficient permissions to pull from the repository of project #7."
ALLOW_PROJECT = dict(allowlist_project_ids=frozenset({JOB_PROJECT_ID}))
ALLOW_ANCESTOR = dict(allowlist_group_ids=frozenset({1}))
ALLOW_OTHER_GROUP = dict(allowlist_group_ids=frozenset({55}))
SCOPE_OFF = dict(inbound_enabled=False)

D, R, G, M = perm.DEVELOPER, perm.REPORTER, perm.GUEST, perm.MAINTAINER
EXTERNAL = user(external=True)
ADMIN = user(admin=True)

# (id, principal, action, project, allowed, reason, status, message)
JOB_TOKEN_CASES = [
    # clone source from the job's own project (developer+)
    ("own-private-developer", job_principal(), Action.READ, own(), True, "job_token_allowed", 200, ""),
    ("own-private-maintainer", job_principal(), Action.READ, own(role=M), True, "job_token_allowed", 200, ""),
    ("own-demoted-reporter", job_principal(), Action.READ, own(role=R), True, "job_token_allowed", 200, ""),
    ("own-demoted-guest", job_principal(), Action.READ, own(role=G), False, "insufficient_role", 403, DOWNLOAD),
    ("own-removed", job_principal(), Action.READ, own(role=0), False, "insufficient_permissions", 403,
     "Insufficient permissions to pull from the repository of project #1."),
    # public projects: always, allowlist or not
    ("public-no-allowlist", job_principal(), Action.READ, target("public"), True, "public_project", 200, ""),
    ("public-allowlisted", job_principal(), Action.READ, target("public", **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    ("public-external", job_principal(EXTERNAL), Action.READ, target("public"), True, "public_project", 200, ""),
    # internal projects: unless the user is external
    ("internal-no-allowlist", job_principal(), Action.READ, target("internal"), True, "internal_project", 200, ""),
    ("internal-allowlisted", job_principal(), Action.READ, target("internal", **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    ("internal-external-nonmember", job_principal(EXTERNAL), Action.READ, target("internal"), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    ("internal-external-allowlisted-nonmember", job_principal(EXTERNAL), Action.READ, target("internal", **ALLOW_PROJECT), False, "insufficient_permissions", 403, INSUFFICIENT),
    ("internal-external-allowlisted-member", job_principal(EXTERNAL), Action.READ, target("internal", role=R, **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    # private projects: only where the user is a member, and the allowlist admits the job
    ("private-member-project-entry", job_principal(), Action.READ, target(role=R, **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    ("private-member-ancestor-group-entry", job_principal(), Action.READ, target(role=D, **ALLOW_ANCESTOR), True, "job_token_allowed", 200, ""),
    ("private-member-parent-group-entry", job_principal(), Action.READ, target(role=D, allowlist_group_ids=frozenset({10})), True, "job_token_allowed", 200, ""),
    ("private-member-unrelated-group-entry", job_principal(), Action.READ, target(role=D, **ALLOW_OTHER_GROUP), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    ("private-member-not-allowlisted", job_principal(), Action.READ, target(role=M), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    ("private-member-allowlist-disabled", job_principal(), Action.READ, target(role=R, **SCOPE_OFF), True, "job_token_allowed", 200, ""),
    ("private-nonmember-allowlisted", job_principal(), Action.READ, target(**ALLOW_PROJECT), False, "insufficient_permissions", 403, INSUFFICIENT),
    ("private-nonmember-allowlist-disabled", job_principal(), Action.READ, target(**SCOPE_OFF), False, "insufficient_permissions", 403, INSUFFICIENT),
    ("private-nonmember-not-allowlisted", job_principal(), Action.READ, target(), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    ("private-guest-allowlisted", job_principal(), Action.READ, target(role=G, **ALLOW_PROJECT), False, "insufficient_role", 403, DOWNLOAD),
    # administrators: no job-token rights without membership
    ("admin-private-nonmember-allowlisted", job_principal(ADMIN), Action.READ, target(**ALLOW_PROJECT), False, "insufficient_permissions", 403, INSUFFICIENT),
    ("admin-private-not-allowlisted", job_principal(ADMIN), Action.READ, target(), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    ("admin-private-member-allowlisted", job_principal(ADMIN), Action.READ, target(role=R, **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    ("admin-public", job_principal(ADMIN), Action.READ, target("public"), True, "public_project", 200, ""),
    # legacy outbound scope of the job's project
    ("outbound-on-private-unlisted", job_principal(outbound_enabled=True), Action.READ, target(role=R, **ALLOW_PROJECT), False, "not_in_outbound_scope", 403, SCOPE_DENIED),
    ("outbound-on-private-listed", job_principal(outbound_enabled=True, outbound_project_ids=frozenset({TARGET_ID})), Action.READ, target(role=R, **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    ("outbound-on-public-unlisted", job_principal(outbound_enabled=True), Action.READ, target("public", **ALLOW_PROJECT), True, "job_token_allowed", 200, ""),
    ("outbound-on-own-project", job_principal(outbound_enabled=True), Action.READ, own(), True, "job_token_allowed", 200, ""),
    # job status and timeout: a dead token is a 401, whatever the target
    *[(f"status-{status}", job_principal(status=status), Action.READ, own(), False, "job_not_running", 401, DENIED_401)
      for status in ("created", "pending", "success", "failed", "canceled", "skipped", "manual")],
    ("timed-out", job_principal(started_at=NOW - timedelta(seconds=3600)), Action.READ, own(), False, "job_timed_out", 401, DENIED_401),
    ("just-before-timeout", job_principal(started_at=NOW - timedelta(seconds=3599)), Action.READ, own(), True, "job_token_allowed", 200, ""),
    ("blocked-user", job_principal(user(state="blocked")), Action.READ, own(), False, "user_blocked", 401, DENIED_401),
    ("deactivated-user", job_principal(user(state="deactivated")), Action.READ, target("public"), False, "user_blocked", 401, DENIED_401),
    ("project-missing", job_principal(), Action.READ, None, False, "project_not_found", 404, NOT_FOUND),
    ("own-no-repository", job_principal(), Action.READ, own(has_repository=False), False, "no_repository", 404, NO_REPOSITORY),
    ("scope-before-repository", job_principal(), Action.READ, target(has_repository=False), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    # push source: never by default; with the setting, own project and developer+
    ("push-own-default", job_principal(), Action.PUSH, own(role=M), False, "job_token_push_disabled", 403, PUSH),
    ("push-own-setting-developer", job_principal(), Action.PUSH, own(job_push_allowed=True), True, "job_token_push_allowed", 200, ""),
    ("push-own-setting-reporter", job_principal(), Action.PUSH, own(role=R, job_push_allowed=True), False, "insufficient_role", 403, PUSH),
    ("push-other-allowlisted", job_principal(), Action.PUSH, target(role=M, job_push_allowed=True, **ALLOW_PROJECT), False, "job_token_push_other_project", 403, PUSH),
    ("push-other-public", job_principal(), Action.PUSH, target("public", role=M), False, "job_token_push_other_project", 403, PUSH),
    ("push-other-private-not-allowlisted", job_principal(), Action.PUSH, target(role=M), False, "not_in_inbound_allowlist", 403, SCOPE_DENIED),
    ("push-admin-own-default", job_principal(ADMIN), Action.PUSH, own(role=M), False, "job_token_push_disabled", 403, PUSH),
]

PAT = dict(kind=Kind.PAT, user=user(), scopes=frozenset({"api"}))
OTHER_CASES = [
    # anonymous
    ("anon-public-read", perm.ANONYMOUS, Action.READ, target("public"), True, "public_project", 200, ""),
    ("anon-internal-read", perm.ANONYMOUS, Action.READ, target("internal"), False, "login_required", 401, DENIED_401),
    ("anon-private-read", perm.ANONYMOUS, Action.READ, target(), False, "login_required", 401, DENIED_401),
    ("anon-missing", perm.ANONYMOUS, Action.READ, None, False, "project_not_found", 401, DENIED_401),
    ("anon-public-push", perm.ANONYMOUS, Action.PUSH, target("public"), False, "anonymous_push", 401, DENIED_401),
    # bad credentials
    ("invalid-token", perm.Principal(Kind.INVALID, failure="unknown_job_token"), Action.READ, target("public"), False, "unknown_job_token", 401, DENIED_401),
    ("invalid-password", perm.Principal(Kind.INVALID, failure="invalid_password"), Action.READ, None, False, "invalid_password", 401, DENIED_401),
    # PATs: scopes, expiry, revocation
    ("pat-api-private-reporter", perm.Principal(**PAT), Action.READ, target(role=R), True, "can_download", 200, ""),
    ("pat-read-repository", perm.Principal(**{**PAT, "scopes": frozenset({"read_repository"})}), Action.READ, target(role=R), True, "can_download", 200, ""),
    ("pat-read-repository-push", perm.Principal(**{**PAT, "scopes": frozenset({"read_repository"})}), Action.PUSH, target(role=D), False, "insufficient_scope", 403, AUTH_UPLOAD),
    ("pat-read-registry-read", perm.Principal(**{**PAT, "scopes": frozenset({"read_registry"})}), Action.READ, target(role=D), False, "insufficient_scope", 403, AUTH_DOWNLOAD),
    ("pat-write-repository-push", perm.Principal(**{**PAT, "scopes": frozenset({"write_repository"})}), Action.PUSH, target(role=D), True, "can_push", 200, ""),
    ("pat-expired", perm.Principal(**PAT, expires_at=NOW), Action.READ, target("public"), False, "token_expired", 401, DENIED_401),
    ("pat-not-yet-expired", perm.Principal(**PAT, expires_at=NOW + timedelta(days=1)), Action.READ, target("public"), True, "can_download", 200, ""),
    ("pat-revoked", perm.Principal(**PAT, revoked=True), Action.READ, target("public"), False, "token_revoked", 401, DENIED_401),
    # passwords and roles
    ("password-private-nonmember", perm.Principal(Kind.PASSWORD, user=user()), Action.READ, target(), False, "project_not_visible", 404, NOT_FOUND),
    ("password-private-guest", perm.Principal(Kind.PASSWORD, user=user()), Action.READ, target(role=G), False, "insufficient_role", 403, DOWNLOAD),
    ("password-private-reporter-push", perm.Principal(Kind.PASSWORD, user=user()), Action.PUSH, target(role=R), False, "insufficient_role", 403, PUSH),
    ("password-private-developer-push", perm.Principal(Kind.PASSWORD, user=user()), Action.PUSH, target(role=D), True, "can_push", 200, ""),
    ("password-internal-nonmember", perm.Principal(Kind.PASSWORD, user=user()), Action.READ, target("internal"), True, "can_download", 200, ""),
    ("password-internal-guest", perm.Principal(Kind.PASSWORD, user=user()), Action.READ, target("internal", role=G), True, "can_download", 200, ""),
    ("password-internal-external", perm.Principal(Kind.PASSWORD, user=EXTERNAL), Action.READ, target("internal"), False, "project_not_visible", 404, NOT_FOUND),
    ("password-public-nonmember-push", perm.Principal(Kind.PASSWORD, user=user()), Action.PUSH, target("public"), False, "insufficient_role", 403, PUSH),
    ("password-blocked", perm.Principal(Kind.PASSWORD, user=user(state="blocked")), Action.READ, target("public"), False, "user_blocked", 401, DENIED_401),
    ("password-missing-project", perm.Principal(Kind.PASSWORD, user=user()), Action.READ, None, False, "project_not_found", 404, NOT_FOUND),
    ("admin-password-private-nonmember", perm.Principal(Kind.PASSWORD, user=ADMIN), Action.PUSH, target(), True, "can_push", 200, ""),
    ("personal-namespace-owner", perm.Principal(Kind.PASSWORD, user=user()), Action.PUSH, target(personal_owner=True), True, "can_push", 200, ""),
    ("no-repository", perm.Principal(Kind.PASSWORD, user=user()), Action.READ, target(role=R, has_repository=False), False, "no_repository", 404, NO_REPOSITORY),
]


@pytest.mark.parametrize(
    "principal,action,project,allowed,reason,status,message",
    [pytest.param(*case[1:], id=case[0]) for case in JOB_TOKEN_CASES + OTHER_CASES],
)
def test_authorize_matrix(principal: perm.Principal, action: Action, project: perm.Project | None,
                          allowed: bool, reason: str, status: int, message: str) -> None:
    decision = perm.authorize(principal, action, project, NOW, BASE)
    assert (decision.allowed, decision.reason, decision.status, decision.message) == (
        allowed, reason, status, message)
    assert decision.challenge == (status == 401 and not allowed)


DEV = perm.Principal(Kind.PASSWORD, user=user())
MAIN_RULE = perm.ProtectedBranch("main")
PROJECT = target(role=D, default_branch="main", protected_branches=(
    MAIN_RULE, perm.ProtectedBranch("release/*", push_access_level=D),
    perm.ProtectedBranch("frozen", push_access_level=perm.NO_ACCESS),
    perm.ProtectedBranch("hotfix", push_access_level=M, allow_force_push=True)))
A, B, Z = "a" * 40, "b" * 40, perm.ZERO_SHA

REF_CASES = [
    ("developer-unprotected", DEV, PROJECT, "refs/heads/feature", A, B, True, True, "unprotected_branch", ""),
    ("developer-unprotected-force", DEV, PROJECT, "refs/heads/feature", A, B, False, True, "unprotected_branch", ""),
    ("developer-unprotected-delete", DEV, PROJECT, "refs/heads/feature", A, Z, True, True, "unprotected_branch", ""),
    ("developer-default", DEV, PROJECT, "refs/heads/main", A, B, True, False, "protected_branch", PUSH_PROTECTED),
    ("maintainer-default", DEV, replace(PROJECT, role=M), "refs/heads/main", A, B, True, True, "protected_branch_allowed", ""),
    ("maintainer-default-force", DEV, replace(PROJECT, role=M), "refs/heads/main", A, B, False, False, "protected_branch_force_push", FORCE_PUSH_PROTECTED),
    ("maintainer-default-delete", DEV, replace(PROJECT, role=M), "refs/heads/main", A, Z, True, False, "default_branch_delete", DELETE_DEFAULT),
    ("maintainer-protected-delete", DEV, replace(PROJECT, role=M), "refs/heads/release/1", A, Z, True, False, "protected_branch_delete", DELETE_PROTECTED),
    ("developer-protected-delete", DEV, PROJECT, "refs/heads/release/1", A, Z, True, False, "protected_branch_delete_role", DELETE_PROTECTED_ROLE),
    ("developer-wildcard-allowed", DEV, PROJECT, "refs/heads/release/1.0", A, B, True, True, "protected_branch_allowed", ""),
    ("developer-create-protected", DEV, PROJECT, "refs/heads/hotfix", Z, B, True, False, "protected_branch_create", CREATE_PROTECTED),
    ("maintainer-no-one-may-push", DEV, replace(PROJECT, role=perm.OWNER), "refs/heads/frozen", A, B, True, False, "protected_branch", PUSH_PROTECTED),
    ("maintainer-force-allowed", DEV, replace(PROJECT, role=M), "refs/heads/hotfix", A, B, False, True, "protected_branch_allowed", ""),
    ("admin-default", perm.Principal(Kind.PASSWORD, user=ADMIN), replace(PROJECT, role=0), "refs/heads/main", A, B, True, True, "protected_branch_allowed", ""),
    ("job-developer-default", job_principal(), PROJECT, "refs/heads/main", A, B, True, False, "protected_branch", PUSH_PROTECTED),
    ("job-admin-default", job_principal(ADMIN), PROJECT, "refs/heads/main", A, B, True, False, "protected_branch", PUSH_PROTECTED),
    ("tag", DEV, PROJECT, "refs/tags/v1", Z, B, True, True, "not_a_branch", ""),
    ("hex-branch", DEV, PROJECT, "refs/heads/" + "0123456789" * 4, Z, B, True, False, "hex_branch_name",
     "You cannot create a branch with a 40-character hexadecimal branch name."),
    ("hex-branch-prefix", DEV, PROJECT, "refs/heads/" + "ab" * 20 + "/x", Z, B, True, False, "hex_branch_name",
     "You cannot create a branch with a 40-character hexadecimal branch name."),
    ("hex-branch-delete", DEV, PROJECT, "refs/heads/" + "ab" * 20, A, Z, True, True, "unprotected_branch", ""),
    ("hex-41-chars", DEV, PROJECT, "refs/heads/" + "a" * 41, Z, B, True, True, "unprotected_branch", ""),
    ("not-utf8", DEV, PROJECT, "refs/heads/bad\udcff", Z, B, True, False, "invalid_ref_name",
     "You cannot push a ref whose name is not valid UTF-8 or is too long to store."),
    ("part-too-long", DEV, PROJECT, "refs/tags/" + "a" * 251, Z, B, True, False, "invalid_ref_name",
     "You cannot push a ref whose name is not valid UTF-8 or is too long to store."),
    ("part-250", DEV, PROJECT, "refs/heads/" + "a" * 250, Z, B, True, True, "unprotected_branch", ""),
    ("name-too-long", DEV, PROJECT, "refs/heads/" + "/".join(["a" * 200] * 6), Z, B, True, False,
     "invalid_ref_name", "You cannot push a ref whose name is not valid UTF-8 or is too long to store."),
]


@pytest.mark.parametrize(
    "principal,project,ref,old,new,fast_forward,allowed,reason,message",
    [pytest.param(*case[1:], id=case[0]) for case in REF_CASES],
)
def test_authorize_ref_update_matrix(principal: perm.Principal, project: perm.Project, ref: str,
                                     old: str, new: str, fast_forward: bool, allowed: bool,
                                     reason: str, message: str) -> None:
    decision = perm.authorize_ref_update(principal, project, ref, old, new, fast_forward)
    assert (decision.allowed, decision.reason, decision.message) == (allowed, reason, message)
    assert decision.status == (200 if allowed else 403)


def test_authorize_ref_update_from_the_web_lets_a_maintainer_delete_a_protected_branch() -> None:
    """BranchCheck#protected_branch_deletion_checks: the role first, then `updated_from_web?`."""
    def delete(role: int, branch: str) -> perm.Decision:
        return perm.authorize_ref_update(DEV, replace(PROJECT, role=role), f"refs/heads/{branch}",
                                         A, Z, True, web=True)
    assert delete(M, "release/1").reason == "protected_branch_web_delete"
    assert (delete(D, "release/1").reason, delete(D, "release/1").message) == (
        "protected_branch_delete_role", DELETE_PROTECTED_ROLE)
    assert (delete(perm.OWNER, "main").reason, delete(perm.OWNER, "main").message) == (
        "default_branch_delete", DELETE_DEFAULT)


INTO = "You are not allowed to push into this branch"
PUBLIC_PROJECT = replace(PROJECT, visibility="public", role=perm.NO_ACCESS)
# (id, principal, project, branch, status, message): POST /repository/commits, cherry-pick, revert
API_COMMIT_CASES = [
    ("developer-unprotected", DEV, PROJECT, "feature", 200, ""),
    ("developer-protected", DEV, PROJECT, "main", 403, f"403 Forbidden - {INTO}"),
    ("developer-wildcard-push-level", DEV, PROJECT, "release/1", 200, ""),
    ("maintainer-protected", DEV, replace(PROJECT, role=M), "main", 200, ""),
    ("owner-no-one-may-push", DEV, replace(PROJECT, role=perm.OWNER), "frozen", 403, f"403 Forbidden - {INTO}"),
    ("reporter", DEV, replace(PROJECT, role=R), "feature", 403, f"403 Forbidden - {INTO}"),
    ("guest-private", DEV, replace(PROJECT, role=G), "feature", 403, "403 Forbidden"),
    ("non-member-private", DEV, replace(PROJECT, role=perm.NO_ACCESS), "feature", 404, "404 Project Not Found"),
    ("anonymous-private", perm.ANONYMOUS, replace(PROJECT, role=perm.NO_ACCESS), "feature", 404, "404 Project Not Found"),
    ("anonymous-public", perm.ANONYMOUS, PUBLIC_PROJECT, "feature", 401, "401 Unauthorized"),
    ("non-member-public", DEV, PUBLIC_PROJECT, "feature", 403, f"403 Forbidden - {INTO}"),
    ("read-api-pat", perm.Principal(Kind.PAT, user=user(), scopes=frozenset({"read_api"})), PROJECT,
     "feature", 403, "insufficient_scope"),
]


@pytest.mark.parametrize("principal,project,branch,status,message",
                         [pytest.param(*case[1:], id=case[0]) for case in API_COMMIT_CASES])
def test_authorize_api_commit_matrix(principal: perm.Principal, project: perm.Project, branch: str,
                                     status: int, message: str) -> None:
    decision = perm.authorize_api_commit(principal, project, branch, NOW, BASE)
    assert (decision.allowed, decision.status, decision.message) == (status == 200, status, message)


def test_authorize_branch_commit_is_the_services_bare_400() -> None:
    assert perm.authorize_branch_commit(DEV, PROJECT, "feature").allowed
    refused = perm.authorize_branch_commit(DEV, PROJECT, "main")
    assert (refused.allowed, refused.reason, refused.status, refused.message) == (
        False, "branch_push_denied", 400, INTO)


@pytest.mark.parametrize("role,allowed", [(G, False), (R, False), (D, True), (M, True), (perm.OWNER, True)])
def test_may_run_job_needs_developer(role: int, allowed: bool) -> None:
    decision = perm.may_run_job(user(), own(role=role))
    assert decision.allowed is allowed
    assert decision.reason == ("can_run_job" if allowed else "insufficient_role")
    assert decision.message == ("" if allowed else
                                "bob may not run CI jobs in top/acme/app: the developer role or higher is needed.")


def test_may_run_job_admin_and_blocked() -> None:
    assert perm.may_run_job(ADMIN, own(role=0)).allowed
    blocked = perm.may_run_job(user(state="blocked"), own(role=M))
    assert (blocked.allowed, blocked.reason, blocked.message) == (
        False, "user_blocked", "bob is blocked and may not run CI jobs.")


def test_admin_api_needs_admin_api_pat() -> None:
    admin_pat = perm.Principal(Kind.PAT, user=ADMIN, scopes=frozenset({"api"}))
    assert perm.authorize_admin(admin_pat, NOW, BASE).allowed
    assert perm.authorize_admin(replace(admin_pat, user=user()), NOW, BASE).status == 403
    assert perm.authorize_admin(replace(admin_pat, scopes=frozenset({"read_api"})), NOW, BASE).status == 403
    assert perm.authorize_admin(perm.ANONYMOUS, NOW, BASE).status == 401
    assert perm.authorize_admin(replace(admin_pat, revoked=True), NOW, BASE).status == 401


def test_wildcard_rule_matches_only_its_pattern() -> None:
    rule = perm.ProtectedBranch("release/*")
    assert rule.matches("release/1.0") and not rule.matches("releases/1")
    assert perm.ProtectedBranch("[x]").matches("[x]")


RD = "requested access to the resource is denied"  # the decision log's explanation
REGISTRY_CASES = [
    # job tokens: pull like clone; push and delete in the own project only; `*` never
    ("job-pull-own", job_principal(), "pull", own(), True, "job_token_allowed"),
    ("job-pull-own-no-git-repository", job_principal(), "pull", own(has_repository=False), True, "job_token_allowed"),
    ("job-push-own", job_principal(), "push", own(), True, "job_token_own_project"),
    ("job-delete-own", job_principal(), "delete", own(), True, "job_token_own_project"),
    ("job-push-own-demoted", job_principal(), "push", own(role=R), False, "insufficient_role"),
    ("job-admin-own", job_principal(), "*", own(role=M), False, "job_token_admin"),
    ("job-pull-public", job_principal(), "pull", target("public"), True, "public_project"),
    ("job-pull-internal", job_principal(), "pull", target("internal"), True, "internal_project"),
    ("job-pull-internal-external", job_principal(EXTERNAL), "pull", target("internal"), False, "not_in_inbound_allowlist"),
    ("job-pull-private-allowlisted-member", job_principal(), "pull", target(role=R, **ALLOW_PROJECT), True, "job_token_allowed"),
    ("job-pull-private-group-entry", job_principal(), "pull", target(role=R, **ALLOW_ANCESTOR), True, "job_token_allowed"),
    ("job-pull-private-not-allowlisted", job_principal(), "pull", target(role=M), False, "not_in_inbound_allowlist"),
    ("job-pull-private-nonmember", job_principal(), "pull", target(**ALLOW_PROJECT), False, "insufficient_permissions"),
    ("job-pull-admin-nonmember", job_principal(ADMIN), "pull", target(**ALLOW_PROJECT), False, "insufficient_permissions"),
    ("job-push-other-public", job_principal(), "push", target("public", role=M), False, "job_token_push_other_project"),
    ("job-push-other-allowlisted", job_principal(), "push", target(role=M, **ALLOW_PROJECT), False, "job_token_push_other_project"),
    ("job-delete-other", job_principal(), "delete", target(role=M, **ALLOW_PROJECT), False, "job_token_push_other_project"),
    ("job-unknown-action", job_principal(), "tag", own(), False, "unknown_action"),
    ("job-missing-project", job_principal(), "pull", None, False, "project_not_found"),
    # users
    ("anon-pull-public", perm.ANONYMOUS, "pull", target("public"), True, "public_project"),
    ("anon-pull-internal", perm.ANONYMOUS, "pull", target("internal"), False, "login_required"),
    ("anon-push-public", perm.ANONYMOUS, "push", target("public"), False, "login_required"),
    ("user-pull-internal", DEV, "pull", target("internal"), True, "can_pull"),
    ("external-pull-internal", perm.Principal(Kind.PASSWORD, user=EXTERNAL), "pull", target("internal"), False, "insufficient_role"),
    ("reporter-pull-private", DEV, "pull", target(role=R), True, "can_pull"),
    ("guest-pull-private", DEV, "pull", target(role=G), False, "insufficient_role"),
    ("reporter-push", DEV, "push", target(role=R), False, "insufficient_role"),
    ("developer-push", DEV, "push", target(role=D), True, "can_push"),
    ("developer-delete", DEV, "delete", target(role=D), True, "can_delete"),
    ("developer-admin", DEV, "*", target(role=D), False, "insufficient_role"),
    ("maintainer-admin", DEV, "*", target(role=M), True, "can_admin"),
    ("admin-push-nonmember", perm.Principal(Kind.PASSWORD, user=ADMIN), "push", target(), True, "can_push"),
    ("pat-read-registry-push", perm.Principal(**{**PAT, "scopes": frozenset({"read_registry"})}), "push", target(role=D), False, "insufficient_scope"),
    ("pat-read-registry-pull", perm.Principal(**{**PAT, "scopes": frozenset({"read_registry"})}), "pull", target(role=D), True, "can_pull"),
    ("pat-write-registry-push", perm.Principal(**{**PAT, "scopes": frozenset({"write_registry"})}), "push", target(role=D), True, "can_push"),
    ("pat-read-repository-pull", perm.Principal(**{**PAT, "scopes": frozenset({"read_repository"})}), "pull", target("public"), False, "insufficient_scope"),
    ("dead-job", job_principal(status="success"), "pull", target("public"), False, "job_not_running"),
]


@pytest.mark.parametrize("principal,action,project,allowed,reason",
                         [pytest.param(*case[1:], id=case[0]) for case in REGISTRY_CASES])
def test_authorize_registry_matrix(principal: perm.Principal, action: str,
                                   project: perm.Project | None, allowed: bool, reason: str) -> None:
    decision = perm.authorize_registry(principal, action, project, NOW, BASE)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    if not allowed and decision.status != 401:
        assert decision.message == RD


def test_authorize_catalog() -> None:
    assert perm.authorize_catalog(perm.Principal(Kind.PASSWORD, user=ADMIN), NOW, BASE).allowed
    assert not perm.authorize_catalog(DEV, NOW, BASE).allowed
    assert not perm.authorize_catalog(job_principal(ADMIN), NOW, BASE).allowed


# -- runners ------------------------------------------------------------------------------

GROUP, PARENT = 7, 3


def queued(tags: tuple[str, ...] = (), protected: bool = True, status: str = "pending",
           user_state: str = "active") -> perm.QueuedJob:
    return perm.QueuedJob(id=1, project_id=20, project_group_ids=frozenset({GROUP, PARENT}),
                          status=status, tags=frozenset(tags), protected_ref=protected,
                          user_state=user_state)


def runner(kind: str = "instance_type", **kw: object) -> perm.Runner:
    return perm.Runner(id=1, runner_type=kind, **kw)  # type: ignore[arg-type]


RUNNER_CASES = [
    ("instance-untagged", runner(), queued(), True, "runner_matches"),
    ("instance-tagged-job", runner(), queued(("docker",)), False, "runner_missing_tags"),
    ("all-tags", runner(tags=frozenset({"docker", "linux"})), queued(("docker", "linux")), True, "runner_matches"),
    ("some-tags", runner(tags=frozenset({"docker"})), queued(("docker", "gpu")), False, "runner_missing_tags"),
    ("no-untagged", runner(tags=frozenset({"docker"}), run_untagged=False), queued(), False, "runner_no_untagged"),
    ("paused", runner(paused=True), queued(), False, "runner_paused"),
    ("taken", runner(), queued(status="running"), False, "job_not_pending"),
    ("group-ancestor", runner("group_type", group_id=PARENT), queued(), True, "runner_matches"),
    ("group-other", runner("group_type", group_id=99), queued(), False, "runner_not_in_scope"),
    ("project-own", runner("project_type", project_id=20), queued(), True, "runner_matches"),
    ("project-other", runner("project_type", project_id=21), queued(), False, "runner_not_in_scope"),
    ("protected-only", runner(ref_protected_only=True), queued(protected=False), False, "runner_ref_protected"),
    ("protected-ok", runner(ref_protected_only=True), queued(protected=True), True, "runner_matches"),
    # RegisterJobService's pre-assign check: a matching runner drops the job of a blocked user
    ("user-blocked", runner(), queued(user_state="blocked"), False, "user_blocked"),
    ("user-blocked-other-runner", runner(tags=frozenset({"x"}), run_untagged=False),
     queued(user_state="blocked"), False, "runner_no_untagged"),
    ("user-deactivated", runner(), queued(user_state="deactivated"), True, "runner_matches"),
]


@pytest.mark.parametrize("runner_facts,job,allowed,reason",
                         [pytest.param(*case[1:], id=case[0]) for case in RUNNER_CASES])
def test_runner_may_take_matrix(runner_facts: perm.Runner, job: perm.QueuedJob, allowed: bool,
                                reason: str) -> None:
    decision = perm.runner_may_take(runner_facts, job)
    assert (decision.allowed, decision.reason) == (allowed, reason)


CREATE_RUNNER_CASES = [
    ("admin-instance", perm.Principal(Kind.PAT, user=ADMIN, scopes=frozenset({"api"})), "instance_type", 0, True),
    ("user-instance", perm.Principal(**PAT), "instance_type", perm.OWNER, False),
    ("owner-group", perm.Principal(**PAT), "group_type", perm.OWNER, True),
    ("maintainer-group", perm.Principal(**PAT), "group_type", M, False),
    ("maintainer-project", perm.Principal(**PAT), "project_type", M, True),
    ("developer-project", perm.Principal(**PAT), "project_type", D, False),
    ("create-runner-scope", perm.Principal(**{**PAT, "scopes": frozenset({"create_runner"})}), "project_type", M, True),
    ("read-api-scope", perm.Principal(**{**PAT, "scopes": frozenset({"read_api"})}), "project_type", M, False),
    ("anonymous", perm.ANONYMOUS, "project_type", M, False),
    ("job-token", job_principal(), "project_type", M, False),
]


@pytest.mark.parametrize("principal,runner_type,role,allowed",
                         [pytest.param(*case[1:], id=case[0]) for case in CREATE_RUNNER_CASES])
def test_authorize_create_runner_matrix(principal: perm.Principal, runner_type: str, role: int,
                                        allowed: bool) -> None:
    decision = perm.authorize_create_runner(principal, runner_type, role, NOW, BASE)
    assert decision.allowed is allowed
    if not allowed and decision.reason == "insufficient_role":
        assert decision.message == "403 Forbidden - Insufficient permissions"


def test_authorize_job_update_follows_the_job_token_rules() -> None:
    running = job_principal().job
    assert running is not None
    assert perm.authorize_job_update(running, True, NOW).allowed
    assert perm.authorize_job_update(running, False, NOW).message == "403 Forbidden"
    assert perm.authorize_job_update(None, False, NOW).reason == "unknown_job_token"
    for status in ("pending", "success", "failed", "canceled"):
        decision = perm.authorize_job_update(replace(running, status=status), True, NOW)
        assert (decision.status, decision.message) == (403, "403 Forbidden - Job is not running")
    late = NOW + timedelta(seconds=running.timeout + 1)
    assert perm.authorize_job_update(running, True, late).reason == "job_timed_out"
    assert perm.authorize_registration(False).status == 403
    assert perm.authorize_runner(False).message == "403 Forbidden"


def test_authorize_artifacts_download() -> None:
    assert perm.authorize_artifacts_download(True, perm.ANONYMOUS, None, NOW, BASE).reason == "own_job_token"
    refused = perm.authorize_artifacts_download(False, perm.ANONYMOUS, target(), NOW, BASE)
    assert (refused.status, refused.message) == (403, "403 Forbidden")
    assert perm.authorize_artifacts_download(False, job_principal(), own(), NOW, BASE).allowed
    other = perm.authorize_artifacts_download(False, job_principal(), target(role=R), NOW, BASE)
    assert (other.allowed, other.reason, other.status) == (False, "not_in_inbound_allowlist", 403)
    dead = perm.authorize_artifacts_download(False, job_principal(status="success"), own(), NOW, BASE)
    assert (dead.reason, dead.status) == ("job_not_running", 403)


# -- REST rules added for GitLab's clients (issue 10) -------------------------------------

def test_sudo_needs_an_admin_pat_with_the_sudo_scope() -> None:
    admin = perm.Principal(Kind.PAT, user=ADMIN, scopes=frozenset({"api", "sudo"}))
    assert perm.authorize_sudo(admin, NOW, BASE).allowed
    cases = [
        (perm.ANONYMOUS, 401, "401 Unauthorized"),
        (replace(admin, user=user()), 403, "403 Forbidden - Must be admin to use sudo"),
        (replace(admin, kind=Kind.PASSWORD), 403, "403 Forbidden - Must be authenticated using an "
         "OAuth or Personal Access Token to use sudo"),
        (replace(admin, scopes=frozenset({"api"})), 403, perm.API_INSUFFICIENT_SCOPE),
        (replace(admin, revoked=True), 401, perm.API_TOKEN_REVOKED),
    ]
    for principal, status, message in cases:
        decision = perm.authorize_sudo(principal, NOW, BASE)
        assert (decision.allowed, decision.status, decision.message) == (False, status, message)


def test_job_token_scope_abilities_authenticate_before_the_project_lookup() -> None:
    for ability in ("read_job_token_scope", "admin_job_token_scope"):
        for project in (None, target(visibility="public")):
            decision = perm.authorize_api(perm.ANONYMOUS, ability, project, NOW, BASE)
            assert (decision.status, decision.message, decision.reason) == (
                401, "401 Unauthorized", "login_required")
    assert perm.authorize_api(perm.ANONYMOUS, "read_project", None, NOW, BASE).status == 404


def test_group_writes_authenticate_first_and_namespaces_need_membership() -> None:
    pat = perm.Principal(Kind.PAT, user=user(), scopes=frozenset({"api"}))
    anonymous_write = perm.authorize_group(perm.ANONYMOUS, "admin_group", "private", 0, NOW, BASE)
    assert (anonymous_write.status, anonymous_write.message) == (401, "401 Unauthorized")
    assert perm.authorize_group(pat, "admin_group", "public", perm.MAINTAINER, NOW, BASE).status == 403
    assert perm.authorize_group(pat, "admin_group", "public", perm.OWNER, NOW, BASE).allowed
    outsider = perm.authorize_group(pat, "read_namespace", "public", 0, NOW, BASE)
    assert (outsider.status, outsider.message) == (404, "404 Namespace Not Found")
    assert perm.authorize_group(pat, "read_namespace", "private", perm.GUEST, NOW, BASE).allowed


def test_an_admin_never_blocks_itself() -> None:
    admin = perm.Principal(Kind.PAT, user=ADMIN, scopes=frozenset({"api"}))
    itself = perm.authorize_instance(admin, "block_user", NOW, BASE, ADMIN.id)
    assert (itself.status, itself.reason) == (403, "block_self")
    assert perm.authorize_instance(admin, "block_user", NOW, BASE, ADMIN.id + 1).allowed
    assert perm.authorize_instance(replace(admin, user=user()), "block_user", NOW, BASE, 99).status == 403


def test_projects_go_into_ones_own_namespace_or_any_as_admin() -> None:
    me = user()
    mine = perm.Principal(Kind.PAT, user=me, scopes=frozenset({"api"}))
    assert perm.authorize_instance(mine, "create_user_project", NOW, BASE, me.id).reason == "own_namespace"
    other = perm.authorize_instance(mine, "create_user_project", NOW, BASE, me.id + 1)
    assert (other.allowed, other.status, other.reason) == (False, 403, "not_admin")
    admin = perm.Principal(Kind.PAT, user=ADMIN, scopes=frozenset({"api"}))
    assert perm.authorize_instance(admin, "create_user_project", NOW, BASE, ADMIN.id + 1).allowed
    assert perm.authorize_instance(perm.ANONYMOUS, "create_user_project", NOW, BASE, me.id).status == 401


@pytest.mark.parametrize("role,level,membership,owned,kept", [
    (perm.NO_ACCESS, None, False, False, True),
    (perm.NO_ACCESS, None, True, False, False),
    (G, None, True, False, True),
    (D, M, False, False, False),
    (M, M, False, False, True),
    (M, None, False, True, False),  # a group list's owned alone means owner
    (perm.OWNER, None, False, True, True),
    (R, R, False, True, True),  # owned with a level: the level decides
    (G, R, True, False, False),
])
def test_listed_by_role_applies_membership_min_access_level_and_owned(
        role: int, level: int | None, membership: bool, owned: bool, kept: bool) -> None:
    assert perm.listed_by_role(role, level, membership=membership, owned=owned) is kept


def test_owns_namespace_needs_the_owner_role() -> None:
    assert [perm.owns_namespace(r) for r in (G, M, perm.OWNER)] == [False, False, True]
