"""Build the forge's one configuration object from defaults, a mapping or FORGE_* variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# In the data directory unless set otherwise; `forge serve --fresh` keeps them (see datadir)
SIGNING_KEY = Path("registry/signing.key")
SIGNING_CERT = Path("registry/signing.crt")

MiB = 1024 * 1024


def http_url(host: str, port: int) -> str:
    """The URL of a server on host:port; an IPv6 address goes in brackets (RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class ForgeConfig:
    """Everything that shapes a forge instance; the CLI, plugin and tests all build one.

    `database_url` defaults to a SQLite file inside `data_dir`. `base_url` is the
    address clients use; the server fills it in once it knows its port. `templates_dir`
    confines the `template:` directories of scenarios sent to `POST /-/forge/seed`.
    """

    data_dir: Path = Path(".forge-data")
    database_url: str = ""
    base_url: str = "http://127.0.0.1"
    root_token: str = ""
    root_password: str = ""
    max_body_bytes: int = 256 * MiB
    max_inflated_body_bytes: int = 64 * MiB  # a gzip request body, once decompressed
    request_timeout: int = 60  # seconds a connection may stay silent before it is closed
    repack_packs: int = 10  # housekeeping repacks past this many packs...
    repack_loose_objects: int = 1000  # ...or this many loose objects
    pack_cache_bytes: int = 256 * MiB  # identical fetches served once (0: off)
    pack_cache_seconds: int = 300  # how long a cached answer is served
    git_engine: str = "auto"  # fetches: "git" (git upload-pack), "dulwich", or "auto" (git if found)
    password_hash_method: str = "pbkdf2:sha256:10000"
    testing: bool = False
    registry_url: str = ""  # host:port of the registry, for CI_REGISTRY; empty: none
    registry_service: str = "container_registry"
    registry_issuer: str = "omnibus-gitlab-issuer"
    registry_key_file: str = ""  # default: registry/signing.key in the data directory
    registry_cert_file: str = ""  # default: registry/signing.crt in the data directory
    templates_dir: str = ""  # where the control API's seed `template:` entries live; empty: none
    event_retention: int = 100_000  # newest decision-log events kept; 0 keeps them all
    runner_registration_token: str = ""  # for `POST /api/v4/runners`; empty: generated at start

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ForgeConfig:
        """Build a config from a mapping of field names; unknown names are an error."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown forge settings: {', '.join(unknown)}")
        converted: dict[str, Any] = {}
        for key, value in values.items():
            default = getattr(cls, key)
            if isinstance(default, bool):
                converted[key] = value if isinstance(value, bool) else str(value).lower() in (
                    "1", "true", "yes", "on")
            elif isinstance(default, int):
                converted[key] = int(value)
            elif isinstance(default, Path):
                converted[key] = Path(value)
            else:
                converted[key] = value
        return cls(**converted)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ForgeConfig:
        """Build a config from FORGE_<FIELD> variables, then apply `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = "FORGE_" + f.name.upper()
            if key in environ:
                values[f.name] = environ[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to `forge.db` in the data directory.

        `postgresql://` URLs are driven by psycopg 3 (`postgresql+psycopg://`).
        """
        if self.database_url:
            for prefix in ("postgresql://", "postgres://"):
                if self.database_url.startswith(prefix):
                    return "postgresql+psycopg://" + self.database_url[len(prefix):]
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'forge.db').resolve()}"

    @property
    def repositories_dir(self) -> Path:
        """Where bare repositories live, one per project id."""
        return self.data_dir / "repositories"

    @property
    def signing_key_path(self) -> Path:
        """The registry token signing key (PEM, created on first use)."""
        return Path(self.registry_key_file) if self.registry_key_file else (
            self.data_dir / SIGNING_KEY)

    @property
    def signing_cert_path(self) -> Path:
        """The self-signed certificate of the signing key (a registry's `rootcertbundle`)."""
        return Path(self.registry_cert_file) if self.registry_cert_file else (
            self.data_dir / SIGNING_CERT)

    def replace(self, **changes: Any) -> ForgeConfig:
        """Return a copy with `changes` applied."""
        return dataclasses.replace(self, **changes)
