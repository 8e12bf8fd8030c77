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
# releases, lazy objects, current user; from test_gitlab.py, namespaces, pagination and
# configuration. Tests of features forge does not claim are marked in the conftest.
api=tests/functional/api
set -- \
    "$api/test_users.py" "$api/test_groups.py" "$api/test_projects.py" "$api/test_branches.py" \
    "$api/test_repository.py" "$api/test_project_job_token_scope.py" "$api/test_packages.py" \
    "$api/test_releases.py" "$api/test_lazy_objects.py" "$api/test_current_user.py" \
    "$api/test_gitlab.py::test_namespaces" "$api/test_gitlab.py::test_pagination" \
    "$api/test_gitlab.py::test_auth_from_config" "$api/test_gitlab.py::test_no_custom_session" \
    "$api/test_gitlab.py::test_custom_session"

cd "$SRC"
report=$WORK/report.txt
# -p no:forge: this is python-gitlab's suite, not forge's (its fixtures must not start a second forge).
status=0
"$PYTHON" -m pytest -p no:forge -p no:cacheprovider -q -rfE --tb=short "$@" > "$report" 2>&1 || status=$?
tail -n 40 "$report" | grep -E '^(FAILED|ERROR) ' || true
summary=$(tail -n 1 "$report")
passed=$(echo "$summary" | grep -Eo '[0-9]+ passed' | cut -d' ' -f1)
failed=$(echo "$summary" | grep -Eo '[0-9]+ (failed|error|errors)' | awk '{n += $1} END {print n + 0}')
unclaimed=$(echo "$summary" | grep -Eo '[0-9]+ (xfailed|xpassed)' | awk '{n += $1} END {print n + 0}')
echo "${passed:-0} passed, ${failed:-0} failed (${unclaimed} not claimed by forge, see README.md)"
[ "$status" -le 1 ] || { cat "$report"; exit "$status"; }
[ "${failed:-0}" -eq 0 ]
