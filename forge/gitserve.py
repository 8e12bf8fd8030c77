"""Serve smart-HTTP Git ahead of Flask at the WSGI layer, so packs stream.

Every request is authorized through `forge.auth` first, as GitLab's Workhorse does;
then fetches go to `git upload-pack` (`forge.gitproc`, with the pack cache) or to
dulwich (`forge.uploadpack`), and pushes to dulwich (`forge.receivepack`).
"""

from __future__ import annotations

import gzip
import itertools
import logging
import re
import struct
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from functools import partial
from io import BytesIO
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from dulwich.errors import (
    ApplyDeltaError,
    ChecksumMismatch,
    GitProtocolError,
    HangupException,
    NotGitRepository,
    ObjectFormatException,
)
from dulwich.protocol import ReceivableProtocol
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from forge import auth, domain, gitproc, packcache
from forge import permissions as perm
from forge.models import Project, db
from forge.receivepack import ForgeReceivePackHandler, PushProtocol, RefCheck
from forge.repos import RepositoryBusy, in_use
from forge.uploadpack import AnyShaInWant, FetchProtocol, ForgeUploadPackHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from forge.state import ForgeState

log = logging.getLogger(__name__)

GIT_ROUTE = re.compile(r"^/(?P<project>.+?)\.git/(?P<op>info/refs|git-upload-pack|git-receive-pack)$")
BARE_INFO_REFS = re.compile(r"^/(?P<project>.+)/info/refs$")
SERVICES = ("git-upload-pack", "git-receive-pack")
CHUNK = 64 * 1024
NO_CACHE = [
    ("Expires", "Fri, 01 Jan 1980 00:00:00 GMT"),
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache, max-age=0, must-revalidate"),
]
# Errors a client can provoke with bad input; they end the request, never the server.
CLIENT_ERRORS = (
    GitProtocolError, HangupException, NotGitRepository, ApplyDeltaError, ChecksumMismatch,
    ObjectFormatException, HTTPException, OSError, EOFError, ValueError, zlib.error, KeyError,
    AssertionError, IndexError, struct.error,
    TypeError,  # dulwich's pack reader, on a pack that ends before the objects its header counts
)
RESULT_HEADERS = [("Content-Type", "application/x-git-upload-pack-result"), *NO_CACHE]
BUSY = "The repository is temporarily unavailable. Please try again later."


def status_line(code: int) -> str:
    """Return a WSGI status line such as `401 Unauthorized`."""
    return f"{code} {HTTP_STATUS_CODES.get(code, 'Unknown')}"


def text_response(start_response: StartResponse, code: int, body: str,
                  headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer with a `text/plain` body, as GitLab does for git errors."""
    data = body.encode()
    start_response(status_line(code), [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
        *headers])
    return [data]


class TooLarge(ValueError):
    """The request body inflates past the forge's limit."""


class NotGzip(ValueError):
    """A request body sent as gzip that is not, or is cut short."""


class Inflated:
    """A gzip request body, decompressed as it is read, refusing to grow past `limit` bytes.

    The body limit counts the bytes on the wire; a small gzip body can inflate to
    gigabytes, so the inflated size is bounded too.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=stream, mode="rb")
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` inflated bytes; raise TooLarge past the limit, NotGzip when
        the body is not gzip."""
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        try:
            data = self._gzip.read(want)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise NotGzip(f"{type(exc).__name__}: {exc}") from exc
        self._left -= len(data)
        if self._left < 0:
            raise TooLarge("request body inflates past the limit")
        return data


class _Streamed:
    """A response body that streams chunks and runs `on_close` however it ends."""

    def __init__(self, first: bytes, rest: Iterator[bytes], on_close: Callable[[], object]) -> None:
        self._first: bytes | None = first
        self._rest = rest
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._rest)

    def close(self) -> None:
        """Called by the server when the response ends or the client leaves."""
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()
        self._on_close()


class _Output:
    """Coalesce dulwich's many small writes into ~64 KiB chunks, starting the response lazily."""

    def __init__(self, start_response: StartResponse, content_type: str) -> None:
        self._start_response = start_response
        self._content_type = content_type
        self._write: Callable[[bytes], object] | None = None
        self._buffer: list[bytes] = []
        self._size = 0

    @property
    def started(self) -> bool:
        """Whether the 200 status has gone out."""
        return self._write is not None

    def write(self, data: bytes) -> int:
        """Buffer `data`, flushing when the buffer is full."""
        self._buffer.append(data)
        self._size += len(data)
        if self._size >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """Send what is buffered (starting the response if needed)."""
        if self._write is None:
            self._write = self._start_response(
                status_line(200), [("Content-Type", self._content_type), *NO_CACHE])
        if self._buffer:
            self._write(b"".join(self._buffer))
            self._buffer, self._size = [], 0


class GitApplication:
    """The WSGI entry point: git routes are served here, everything else goes to `fallback`."""

    def __init__(self, state: ForgeState, flask_app: Any, fallback: WSGIApplication) -> None:
        self.state = state
        self.flask_app = flask_app
        self.fallback = fallback
        # Fetches run the real `git upload-pack` when there is one (GitLab's way); dulwich
        # serves them otherwise, and always serves pushes.
        self.git = gitproc.find_git(state.config.git_engine)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        match = GIT_ROUTE.match(path)
        if match is None:
            bare = BARE_INFO_REFS.match(path)
            if bare and environ["REQUEST_METHOD"] in ("GET", "HEAD"):
                query = environ.get("QUERY_STRING", "")
                location = quote(f"/{bare['project']}.git/info/refs") + (f"?{query}" if query else "")
                start_response(status_line(301), [("Location", location), ("Content-Length", "0")])
                return [b""]
            return self.fallback(environ, start_response)
        try:
            return self._serve(match["project"], match["op"], environ, start_response)
        except Exception:  # a bug, not bad input: log it, and fail the test that caused it
            text = traceback.format_exc()
            log.error("git request %s %s failed:\n%s", environ.get("REQUEST_METHOD"), path, text)
            self.state.record_error(text)
            return text_response(start_response, 500, "Internal server error")

    def _serve(self, project_path: str, op: str, environ: WSGIEnvironment,
               start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if op == "info/refs":
            if method == "HEAD":
                start_response(status_line(403), [("Content-Length", "0")])
                return [b""]
            if method != "GET":
                return text_response(start_response, 405, "Method Not Allowed", [("Allow", "GET")])
            service = parse_qs(environ.get("QUERY_STRING", "")).get("service", [""])[0]
            if service not in SERVICES:
                return text_response(start_response, 403, "Only Git smart HTTP is supported.")
        else:
            if method != "POST":
                return text_response(start_response, 405, "Method Not Allowed", [("Allow", "POST")])
            service = op
        action = perm.Action.PUSH if service == "git-receive-pack" else perm.Action.READ

        now, base_url = self.state.now(), self.state.config.base_url
        with self.flask_app.app_context():
            # Each statement on its own, as under READ COMMITTED they see the same: no BEGIN
            # and COMMIT round trips on PostgreSQL (the decision log is one INSERT).
            db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            outcome = auth.authorize_request(
                now=now, backend=self.state.backend, method=method,
                path=environ.get("PATH_INFO", ""), authorization=environ.get("HTTP_AUTHORIZATION"),
                project_path=project_path, action=action.value,
                decide=lambda principal, facts, _: perm.authorize(principal, action, facts, now,
                                                                   base_url))
            # Read before the commit expires it: one query less per request (a round trip on PostgreSQL).
            project_id = outcome.project.id if outcome.project is not None else 0
            db.session.commit()
            decision = outcome.decision
            if not decision.allowed:
                headers = [("WWW-Authenticate", 'Basic realm="GitLab"')] if decision.challenge else []
                return text_response(start_response, decision.status, decision.message, headers)
            assert outcome.project is not None and outcome.facts is not None

        if op == "info/refs":
            if service == "git-upload-pack" and self.git:
                return self._git_advertise(project_id, environ, start_response)
            return self._advertise(service, project_id, start_response)
        expected = f"application/x-{service}-request"
        if environ.get("CONTENT_TYPE", "") != expected:
            return text_response(start_response, 415, f"Expected Content-Type {expected}.")
        if service == "git-upload-pack" and self.git:
            return self._git_fetch(project_id, environ, start_response)
        check = self._ref_checker(outcome, project_id, environ) if action is perm.Action.PUSH else None
        return self._service(service, project_id, environ, start_response, check)

    def _git_advertise(self, project_id: int, environ: WSGIEnvironment,
                       start_response: StartResponse) -> list[bytes]:
        assert self.git is not None
        repo_dir = self.state.backend.path_for(project_id)
        protocol = environ.get("HTTP_GIT_PROTOCOL", "")
        produce = partial(gitproc.advertise, self.git, repo_dir, protocol)
        cache = self.state.pack_cache
        try:
            with in_use(repo_dir):  # the refs are in the key: a cached advertisement is current
                data = cache.advertisement(packcache.request_key(
                    repo_dir, protocol, b"", advertisement=True), produce) if cache.enabled else produce()
        except RepositoryBusy:
            return text_response(start_response, 503, BUSY)
        start_response(status_line(200), [
            ("Content-Type", "application/x-git-upload-pack-advertisement"),
            ("Content-Length", str(len(data))), *NO_CACHE])
        return [data]

    def _git_fetch(self, project_id: int, environ: WSGIEnvironment,
                   start_response: StartResponse) -> Iterable[bytes]:
        """Run `git upload-pack` for the request and stream its answer (or the cached one)."""
        assert self.git is not None
        body = self._request_body(environ)
        if body is None:
            return text_response(start_response, 413, "Request body too large.")
        repo_dir = self.state.backend.path_for(project_id)
        protocol = environ.get("HTTP_GIT_PROTOCOL", "")
        cache, key = self.state.pack_cache, ""
        if cache.enabled:
            try:
                request = body.read()
            except (TooLarge, RequestEntityTooLarge):
                return text_response(start_response, 413, "Request body too large.")
            except (NotGzip, HTTPException, OSError) as exc:  # not gzip, cut short, bad chunks
                log.warning("git-upload-pack request unreadable: %s: %s", type(exc).__name__, exc)
                return text_response(start_response, 400, f"Bad request: {type(exc).__name__}")
            body = BytesIO(request)
            key = packcache.request_key(repo_dir, protocol, request)
            while (answer := cache.lookup(key)) is not None:  # stored, or being written
                try:
                    first_chunk = next(answer, b"")
                except OSError:  # the request it followed failed before a byte: try again
                    continue
                start_response(status_line(200), RESULT_HEADERS)
                return _Streamed(first_chunk, answer, lambda: None)
        held = ExitStack()
        if key:
            held.callback(cache.abandon, key)
        try:
            held.enter_context(in_use(repo_dir))
            run = gitproc.UploadPack(self.git, repo_dir, protocol, body.read)
            held.callback(run.close)
            first = run.first()
        except RepositoryBusy:
            held.close()
            return text_response(start_response, 503, BUSY)
        except BaseException:
            held.close()
            raise
        if not first:
            held.close()
            if isinstance(run.input_error, (TooLarge, RequestEntityTooLarge)):
                return text_response(start_response, 413, "Request body too large.")
            reason = run.stderr.strip().splitlines()[-1:] or ["git upload-pack failed"]
            return text_response(start_response, 400, f"Bad request: {reason[0]}")
        start_response(status_line(200), RESULT_HEADERS)
        if not key:
            return _Streamed(first, run.rest(), held.close)
        recorded = cache.record(key, itertools.chain([first], run.rest()),
                                succeeded=lambda: run.close() == 0)
        return _Streamed(next(recorded), recorded, held.close)

    def _request_body(self, environ: WSGIEnvironment) -> Any:
        """The request body, inflated when gzip'd; None when it is larger than allowed."""
        config = self.state.config
        try:
            stream: Any = get_input_stream(environ, max_content_length=config.max_body_bytes)
        except HTTPException:
            return None
        if environ.get("HTTP_CONTENT_ENCODING", "") == "gzip":
            stream = Inflated(stream, config.max_inflated_body_bytes)
        return stream

    def _advertise(self, service: str, project_id: int, start_response: StartResponse) -> list[bytes]:
        out = BytesIO()
        proto = ReceivableProtocol(BytesIO().read, out.write)
        proto.write_pkt_line(f"# service={service}\n".encode())
        proto.write_pkt_line(None)
        handler_cls = ForgeReceivePackHandler if service == "git-receive-pack" else ForgeUploadPackHandler
        with in_use(self.state.backend.path_for(project_id)):
            handler: Any = handler_cls(self.state.backend, [str(project_id)], proto,
                                       stateless_rpc=True, advertise_refs=True)
            try:
                handler.handle()
            finally:
                handler.repo.close()
        data = out.getvalue()
        start_response(status_line(200), [
            ("Content-Type", f"application/x-{service}-advertisement"),
            ("Content-Length", str(len(data))), *NO_CACHE])
        return [data]

    def _service(self, service: str, project_id: int, environ: WSGIEnvironment,
                 start_response: StartResponse, check: RefCheck | None) -> Iterable[bytes]:
        stream = self._request_body(environ)
        if stream is None:
            return text_response(start_response, 413, "Request body too large.")
        output = _Output(start_response, f"application/x-{service}-result")
        protocol = PushProtocol if service == "git-receive-pack" else FetchProtocol
        proto = protocol(stream.read, output.write)
        backend = self.state.backend
        repo_dir = backend.path_for(project_id)
        handler: Any = None
        try:
            if service == "git-receive-pack":
                handler = ForgeReceivePackHandler(
                    backend, [str(project_id)], proto, stateless_rpc=True, check_ref=check,
                    repo_dir=repo_dir)
                handler.handle()
                if handler.accepted:
                    self._after_push(project_id)
            else:
                with in_use(repo_dir):
                    handler = ForgeUploadPackHandler(backend, [str(project_id)], proto,
                                                     stateless_rpc=True)
                    assert isinstance(proto, FetchProtocol)
                    wants = proto.read_first_section()
                    handler.repo = AnyShaInWant(handler.repo, wants, proto.client_shallow)
                    handler.handle()
            output.flush()
        except (TooLarge, RequestEntityTooLarge):  # inflated, or chunked, past the limit
            if not output.started:
                return text_response(start_response, 413, "Request body too large.")
        except RepositoryBusy:
            if not output.started:
                return text_response(start_response, 503, BUSY)
        except CLIENT_ERRORS as exc:
            log.warning("git %s ended early: %s: %s", service, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            if not output.started:
                return text_response(start_response, 400, f"Bad request: {type(exc).__name__}")
        finally:
            if handler is not None:
                handler.repo.close()
            if service == "git-receive-pack":
                self.state.housekeeper.after_push(project_id)
        return [b""]

    def _after_push(self, project_id: int) -> None:
        """What GitLab does once a push landed: the first branch pushed to an empty project
        becomes its default branch (see `domain.adopt_default_branch`). Every push asks:
        one ref read answers it, without the database, unless HEAD names no commit."""
        if self.state.backend.has_head(project_id):
            return
        with self.flask_app.app_context():
            project = db.session.get(Project, project_id)
            if project is not None and domain.adopt_default_branch(project, self.state.backend):
                db.session.commit()

    def _ref_checker(self, outcome: auth.Outcome, project_id: int,
                     environ: WSGIEnvironment) -> RefCheck:
        """Build the per-ref check: decide with the pure rules and record each decision."""
        principal, facts = outcome.principal, outcome.facts
        assert facts is not None
        path = environ.get("PATH_INFO", "")

        def check(ref: str, old: str, new: str, fast_forward: bool,
                  options: list[str]) -> perm.Decision:
            decision = perm.authorize_ref_update(principal, facts, ref, old, new, fast_forward)
            shown = ref.encode(errors="surrogateescape").decode(errors="replace")
            with self.flask_app.app_context():
                auth.record(self.state.now(), "POST", path, principal, "push_ref", decision,
                            db.session.get(Project, project_id), ref=shown,
                            push_options=options or None)
                db.session.commit()
            return decision

        return check
