"""What another project gets from `pip install forge`: the sample image ships with the package."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from forge.testing import SAMPLE_IMAGE, SAMPLE_IMAGE_DIR

ROOT = Path(__file__).resolve().parent.parent


def test_sample_image_is_package_data() -> None:
    package = ROOT / "forge"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["forge"]
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    files = {path for path in (package / "data").rglob("*") if path.is_file()}
    assert files and files == shipped
    assert SAMPLE_IMAGE_DIR.is_relative_to(package)
    assert SAMPLE_IMAGE == f"oci:{SAMPLE_IMAGE_DIR}:latest"
    index = json.loads((SAMPLE_IMAGE_DIR / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"


def test_fixtures_image_is_the_sample_image() -> None:
    assert (ROOT / "fixtures" / "images" / "hello").resolve() == SAMPLE_IMAGE_DIR


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_sample_image_is_readable_by_skopeo(tmp_path: Path) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", SAMPLE_IMAGE, f"dir:{tmp_path / 'out'}"],
                   check=True, capture_output=True, timeout=60)
    assert (tmp_path / "out" / "manifest.json").exists()
