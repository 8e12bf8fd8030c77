"""forge: a GitLab-faithful mock Git forge for CI testing."""

# The GitLab release forge emulates, one for all it answers: `GET /api/v4/version` and the
# jobs' CI_SERVER_VERSION. The revision is a placeholder: forge is no build of GitLab.
GITLAB_VERSION = "18.3.0"
GITLAB_REVISION = "forge0000000"
