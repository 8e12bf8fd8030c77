"""forge: a GitLab-faithful mock Git forge for CI testing."""
