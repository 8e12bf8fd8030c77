#!/bin/sh
# Run python-gitlab's own functional tests (tests/functional/api, from its sdist) for the
# areas forge claims, against a fresh `forge serve`; print "N passed, M failed".
# The tests left out, and why, are listed in README.md ("python-gitlab's functional suite").
set -eu
VERSION=8.6.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=${WORK:-$ROOT/.forge-data/python-gitlab-suite}
SRC=$WORK/python_gitlab-$VERSION

if [ ! -d "$SRC/tests/functional/api" ]; then
    mkdir -p "$WORK"
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: "python-gitlab==$VERSION" -d "$WORK"
    tar -xzf "$WORK/python_gitlab-$VERSION.tar.gz" -C "$WORK"
fi
cp "$ROOT/scripts/python_gitlab_conftest.py" "$SRC/tests/functional/api/conftest.py"

# The claimed areas: users, groups, projects, members, branches, tags, repository files,
# trees, archives and commits, protected branches, job token scope, generic packages,
# releases, lazy objects, current user, namespaces.
api=tests/functional/api
set -- \
    "$api/test_users.py::test_block_user" \
    "$api/test_users.py::test_delete_user" \
    "$api/test_users.py::test_user_projects_list" \
    "$api/test_users.py::test_list_multiple_users" \
    "$api/test_projects.py::test_projects_head" \
    "$api/test_projects.py::test_project_head" \
    "$api/test_projects.py::test_create_project" \
    "$api/test_projects.py::test_project_members" \
    "$api/test_projects.py::test_project_protected_branches" \
    "$api/test_projects.py::test_project_tags" \
    "$api/test_branches.py" \
    "$api/test_repository.py::test_repository_files" \
    "$api/test_repository.py::test_repository_tree" \
    "$api/test_repository.py::test_repository_archive" \
    "$api/test_repository.py::test_repository_archive_formats" \
    "$api/test_repository.py::test_create_commit" \
    "$api/test_repository.py::test_list_all_commits" \
    "$api/test_project_job_token_scope.py" \
    --deselect "$api/test_project_job_token_scope.py::test_disable_limit_access_to_this_project" \
    "$api/test_packages.py::test_upload_generic_package" \
    "$api/test_packages.py::test_upload_generic_package_as_bytes" \
    "$api/test_packages.py::test_upload_generic_package_as_file" \
    "$api/test_packages.py::test_upload_generic_package_select" \
    "$api/test_packages.py::test_download_generic_package" \
    "$api/test_packages.py::test_stream_generic_package" \
    "$api/test_packages.py::test_download_generic_package_to_file" \
    "$api/test_packages.py::test_stream_generic_package_to_file" \
    "$api/test_releases.py" \
    "$api/test_lazy_objects.py" \
    "$api/test_current_user.py::test_current_user_status" \
    "$api/test_gitlab.py::test_namespaces"

cd "$SRC"
report=$WORK/report.txt
# -p no:forge: this is python-gitlab's suite, not forge's (its fixtures must not start a second forge).
status=0
"$PYTHON" -m pytest -p no:forge -p no:cacheprovider -q -rfE --tb=short "$@" > "$report" 2>&1 || status=$?
tail -n 40 "$report" | grep -E '^(FAILED|ERROR) ' || true
passed=$(grep -Eo '[0-9]+ passed' "$report" | tail -1 | cut -d' ' -f1)
failed=$(grep -Eo '[0-9]+ (failed|error|errors)' "$report" | awk '{n += $1} END {print n + 0}')
echo "${passed:-0} passed, ${failed:-0} failed"
[ "$status" -le 1 ] || { cat "$report"; exit "$status"; }
[ "${failed:-0}" -eq 0 ]
