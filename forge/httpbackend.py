"""`git http-backend` behind a werkzeug server: the reference forge is measured and tested against.

Not part of forge itself: `make bench` and the fidelity tests run git's own smart-HTTP
server next to forge, on copies of the same repositories, and compare.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
# What Gitaly sets for upload-pack and receive-pack, for a like-for-like reference.
GITALY_SETTINGS = ("http.receivepack=true", "uploadpack.allowFilter=true",
                   "uploadpack.allowAnySHA1InWant=true", "receive.advertisePushOptions=true",
                   "receive.hideRefs=refs/pipelines/", "receive.hideRefs=refs/keep-around/",
                   "receive.hideRefs=refs/merge-requests/", "receive.hideRefs=refs/environments/",
                   "receive.fsckObjects=true", "receive.fsck.badTimezone=ignore",
                   "receive.fsck.missingSpaceBeforeDate=ignore",
                   "receive.fsck.zeroPaddedFilemode=ignore")


def configure(repo: Path) -> None:
    """Give a bare repository Gitaly's settings."""
    for setting in GITALY_SETTINGS:
        key, value = setting.split("=", 1)
        subprocess.run(["git", "config", "--add", key, value], cwd=repo, env=GIT_ENV, check=True)


class HttpBackend:
    """`git http-backend` as a WSGI app (CGI per request), served by werkzeug like forge."""

    def __init__(self, root: Path, push_auth: bool = False) -> None:
        """Serve the repositories under `root`; with `push_auth`, pushes must carry Basic
        credentials (any), so a pushing client pays the 401 round trip it pays GitLab."""
        self.root = root
        self.push_auth = push_auth
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        pushing = "git-receive-pack" in environ["PATH_INFO"] + environ.get("QUERY_STRING", "")
        if self.push_auth and pushing and not environ.get("HTTP_AUTHORIZATION", "").startswith("Basic "):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="bench"'),
                                                ("Content-Length", "0")])
            return [b""]
        body = get_input_stream(environ).read()
        env = {**GIT_ENV, "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": environ["REQUEST_METHOD"], "PATH_INFO": environ["PATH_INFO"],
               "QUERY_STRING": environ.get("QUERY_STRING", ""), "REMOTE_USER": "bench",
               "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
               "CONTENT_LENGTH": str(len(body)), "GATEWAY_INTERFACE": "CGI/1.1",
               "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
               "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", "")}
        proc = subprocess.Popen(["git", "http-backend"], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(body)
        proc.stdin.close()
        status, headers = "200 OK", []
        while (line := proc.stdout.readline().rstrip(b"\r\n")):
            key, _, value = line.decode().partition(":")
            if key.lower() == "status":
                status = value.strip()
            else:
                headers.append((key, value.strip()))
        start_response(status, headers)

        def stream() -> Iterable[bytes]:
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read(65536):
                    yield chunk
            finally:
                proc.stdout.close()
                if proc.poll() is None:
                    proc.kill()
                proc.wait()

        return stream()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
