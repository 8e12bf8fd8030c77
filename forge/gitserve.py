"""Serve smart-HTTP Git with dulwich, ahead of Flask at the WSGI layer, so packs stream.

Every request is authorized through `forge.auth` before dulwich sees it; per-ref push
rules run inside a ReceivePack handler subclass and are reported through git's
report-status, as GitLab's pre-receive hook does.
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
from io import BytesIO
from pathlib import Path
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
from dulwich.graph import can_fast_forward
from dulwich.objects import Commit, ObjectID, Tag, Tree
from dulwich.protocol import (
    CAPABILITY_FILTER,
    CAPABILITY_PUSH_OPTIONS,
    CAPABILITY_SIDE_BAND_64K,
    SIDE_BAND_CHANNEL_PROGRESS,
    ReceivableProtocol,
    extract_capabilities,
)
from dulwich.refs import Ref, check_ref_format
from dulwich.server import ReceivePackHandler, UploadPackHandler
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from forge import auth, gitproc, packcache
from forge import permissions as perm
from forge.housekeeping import record_refused_packs, sweep
from forge.models import Project, db
from forge.repos import RepositoryBusy, current_ref, in_use, maintenance, ref_lock

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
# Refs GitLab keeps for itself: hidden from pushers and refused with git's wording.
HIDDEN_REFS = (b"refs/pipelines/", b"refs/keep-around/", b"refs/merge-requests/",
               b"refs/environments/")
BUSY = "The repository is temporarily unavailable. Please try again later."
RefCheck = Callable[[str, str, str, bool], perm.Decision]


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


class ForgeUploadPackHandler(UploadPackHandler):
    """upload-pack without partial clone: dulwich serves broken `--filter` results."""

    def capabilities(self) -> list[bytes]:
        """dulwich's capabilities without `filter` (clients fall back to full clones), and
        with fetches of any reachable sha (see `_AnyShaInWant`)."""
        return [*(cap for cap in super().capabilities() if cap != CAPABILITY_FILTER),
                b"allow-reachable-sha1-in-want"]

    def set_client_capabilities(self, caps: Iterable[bytes]) -> None:
        """Ignore a `filter` the client sends anyway (git does, after warning it is unsupported)."""
        super().set_client_capabilities([cap for cap in caps if not cap.startswith(CAPABILITY_FILTER)])


class _AnyShaInWant:
    """A repository whose refs, for one fetch, also name the objects the client wants.

    dulwich refuses a want that is not an advertised tip ("Client wants invalid object");
    GitLab allows any sha (`uploadpack.allowAnySHA1InWant`), and a fetch whose refs moved
    between advertisement and request relies on it.
    """

    PREFIX = b"refs/forge-wants/"

    def __init__(self, repo: Any, wants: Iterable[bytes]) -> None:
        self._repo = repo
        store = repo.object_store
        self._extra = {self.PREFIX + sha: sha for sha in wants if _exists(store, sha)}

    def get_refs(self) -> dict[bytes, bytes]:
        """The real refs plus one per wanted object that exists."""
        return {**self._repo.get_refs(), **self._extra}

    def get_peeled(self, ref: bytes) -> bytes | None:
        """Peel a ref (a wanted object peels to itself)."""
        return self._extra[ref] if ref in self._extra else self._repo.get_peeled(ref)

    def find_missing_objects(self, *args: Any, **kwargs: Any) -> Any:
        """dulwich's own method, run against these refs."""
        return type(self._repo).find_missing_objects(self, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


def _exists(store: Any, sha: bytes) -> bool:
    try:
        return ObjectID(sha) in store
    except (ValueError, TypeError):
        return False


class ForgeReceivePackHandler(ReceivePackHandler):
    """receive-pack with GitLab's per-ref rules, a connectivity check and one push at a time."""

    def __init__(self, backend: Any, args: Any, proto: Any, stateless_rpc: bool = False,
                 advertise_refs: bool = False, check_ref: RefCheck | None = None,
                 repo_dir: Path | None = None) -> None:
        super().__init__(backend, args, proto, stateless_rpc=stateless_rpc,
                         advertise_refs=advertise_refs)
        self.check_ref = check_ref
        self.repo_dir = repo_dir
        self._packs_before: set[str] = set()
        self._connected: bool | None = None
        self.repo = _HidingRefs(self.repo)  # type: ignore[assignment]
        self._held = ExitStack()
        self._locked = False
        self._accepted = False
        self._refused = False

    def capabilities(self) -> list[bytes]:
        """dulwich's capabilities plus `push-options`, as GitLab (Gitaly) advertises them."""
        return [*super().capabilities(), CAPABILITY_PUSH_OPTIONS]

    def handle(self) -> None:
        """Receive the push; ref updates happen under the repository's ref lock."""
        if self.advertise_refs or self.repo_dir is None:
            super().handle()
            return
        pack_dir = self.repo_dir / "objects" / "pack"
        with in_use(self.repo_dir), ExitStack() as self._held:
            files_before = {p.stem for p in pack_dir.glob("*.idx")}
            self._packs_before = {pack.name().decode() for pack in self.repo.object_store.packs}
            super().handle()
            if self._refused or not self._accepted:
                # What this push brought may be referenced by nothing: housekeeping checks
                # and drops such packs.
                record_refused_packs(self.repo_dir, sorted(
                    {p.stem for p in pack_dir.glob("*.idx")} - files_before))
        # A pack that failed to unpack leaves a temporary file. When nobody else is using
        # the repository, sweep it now; otherwise housekeeping does, after this push.
        with maintenance(self.repo_dir) as alone:
            if alone:
                sweep(self.repo_dir)

    def _on_update(self, ref_name: bytes, old_sha: bytes, new_sha: bytes) -> bytes | None:
        """Refuse a ref update that would point at missing objects or that the rules deny."""
        error = self._check_update(ref_name, old_sha, new_sha)
        if error:
            self._refused = True
        else:
            self._accepted = True
        return error

    def _check_update(self, ref_name: bytes, old_sha: bytes, new_sha: bytes) -> bytes | None:
        """Decide one ref update: None to let dulwich apply it, or git's status for a refusal.

        The first update takes the ref lock, held until the push ends, so checking the
        ref's current value here and dulwich's update after it are one compare-and-swap
        against every other writer (pushes, REST, seeds) in every process.
        """
        error = super()._on_update(ref_name, old_sha, new_sha)  # type: ignore[arg-type]
        if error:
            return error
        if not check_ref_format(Ref(ref_name[len(b"refs/"):])):  # refs/foo: dulwich cannot store it
            return b"funny refname"
        if ref_name.startswith(HIDDEN_REFS):
            return b"deny updating a hidden ref"
        if self.repo_dir is not None and not self._locked:
            try:
                self._held.enter_context(ref_lock(self.repo_dir))
            except RepositoryBusy:
                return b"failed to lock"
            self._locked = True
        if current_ref(self.repo, ref_name) != old_sha:  # type: ignore[arg-type]
            return b"failed to update ref"
        zero = perm.ZERO_SHA.encode()
        if new_sha != zero and not self._objects_connected(new_sha):
            return b"missing necessary objects"
        if self.check_ref is not None:
            fast_forward = old_sha == zero or new_sha == zero or self._is_ancestor(old_sha, new_sha)
            decision = self.check_ref(ref_name.decode(errors="surrogateescape"), old_sha.decode(),
                                      new_sha.decode(), fast_forward)
            if not decision.allowed:
                if self.has_capability(CAPABILITY_SIDE_BAND_64K):
                    self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS,
                                              f"GitLab: {decision.message}\n".encode())
                return b"pre-receive hook declined"
        return None

    def _is_ancestor(self, old_sha: bytes, new_sha: bytes) -> bool:
        try:
            return bool(can_fast_forward(self.repo, old_sha, new_sha))  # type: ignore[arg-type]
        except KeyError:
            return False

    def _objects_connected(self, new_sha: bytes) -> bool:
        """Check that `new_sha` exists and every object the push added has its references."""
        store = self.repo.object_store
        if ObjectID(new_sha) not in store:
            return False
        if self._connected is None:
            self._connected = True
            for pack in store.packs:
                if pack.name().decode() in self._packs_before:
                    continue
                for sha in pack:
                    if not all(ref in store for ref in _references(pack[sha])):  # type: ignore[operator]
                        self._connected = False
                        return False
        return self._connected


class _HidingRefs:
    """A repository whose ref listing leaves out the refs GitLab hides from pushers."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def get_refs(self) -> dict[bytes, bytes]:
        """The refs a pusher sees: all but the hidden ones."""
        return {name: sha for name, sha in self._repo.get_refs().items()
                if not name.startswith(HIDDEN_REFS)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


def _references(obj: Any) -> Iterator[bytes]:
    """Yield the ids an object points at (gitlinks excluded: they name other repositories)."""
    if isinstance(obj, Commit):
        yield obj.tree
        yield from obj.parents
    elif isinstance(obj, Tree):
        for entry in obj.iteritems():
            if entry.mode != 0o160000:
                yield entry.sha
    elif isinstance(obj, Tag):
        yield obj.object[1]


class PushProtocol(ReceivableProtocol):
    """The receive-pack protocol with what dulwich's reader lacks: shallow lines, push options.

    dulwich reads every command line as a ref update; git sends `shallow <sha>` first
    when pushing from a `--depth` clone (the connectivity check makes ignoring them
    safe). A client that was offered `push-options` and uses them (`git push -o ci.skip`)
    sends them after the commands, before the pack; they are read off here and kept.
    """

    _commands_done = False
    _first = True
    push_options: list[str] | None = None

    def read_pkt_line(self) -> bytes | None:
        """Read a pkt-line, skipping `shallow` lines and collecting push options."""
        while True:
            line = super().read_pkt_line()
            if self._commands_done:
                return line
            if line is None:
                self._commands_done = True
                if self.push_options is not None:
                    while (option := super().read_pkt_line()) is not None:
                        self.push_options.append(option.rstrip(b"\n").decode(errors="replace"))
                return line
            if line.startswith(b"shallow "):
                continue
            if self._first:
                self._first = False
                _, caps = extract_capabilities(line)
                if CAPABILITY_PUSH_OPTIONS in caps:
                    self.push_options = []
            return line


class FetchProtocol(ReceivableProtocol):
    """The upload-pack protocol, accepting a fetch into a shallow clone.

    A shallow clone that fetches without `--depth` sends `shallow` lines but no
    `deepen`. git's upload-pack then sends no shallow-update section; dulwich insists
    on a `deepen` and fails. With no `deepen` in the request, the `shallow` lines are
    dropped before dulwich reads them, which gives git's answer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[bytes | None] = []
        self._first_section_read = False

    def unread_pkt_line(self, data: bytes | None) -> None:
        """Push a line back to be read again."""
        self._pending.insert(0, data)

    def read_pkt_line(self) -> bytes | None:
        """Read a pkt-line; the first section (wants, shallows, deepen) is read whole."""
        if self._pending:
            return self._pending.pop(0)
        if self._first_section_read:
            return super().read_pkt_line()
        self.read_first_section()
        return self._pending.pop(0)

    def read_first_section(self) -> list[bytes]:
        """Read the wants, shallows and deepen lines ahead; return the wanted ids."""
        self._first_section_read = True
        section = [super().read_pkt_line()]
        while section[-1] is not None:
            section.append(super().read_pkt_line())
        if not any(line.startswith(b"deepen") for line in section if line):
            section = [line for line in section if not (line and line.startswith(b"shallow "))]
        self._pending = section
        return [line[5:45] for line in section if line and line.startswith(b"want ")]


class TooLarge(ValueError):
    """The request body inflates past the forge's limit."""


class Inflated:
    """A gzip request body, decompressed as it is read, refusing to grow past `limit` bytes.

    The body limit counts the bytes on the wire; a small gzip body can inflate to
    gigabytes, so the inflated size is bounded too.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=stream, mode="rb")
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` inflated bytes; raise TooLarge past the limit."""
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        data = self._gzip.read(want)
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
            outcome = auth.authorize_request(
                now=now, backend=self.state.backend, method=method,
                path=environ.get("PATH_INFO", ""), authorization=environ.get("HTTP_AUTHORIZATION"),
                project_path=project_path, action=action.value,
                decide=lambda principal, facts, _: perm.authorize(principal, action, facts, now,
                                                                   base_url))
            db.session.commit()
            decision = outcome.decision
            if not decision.allowed:
                headers = [("WWW-Authenticate", 'Basic realm="GitLab"')] if decision.challenge else []
                return text_response(start_response, decision.status, decision.message, headers)
            assert outcome.project is not None and outcome.facts is not None
            project_id = outcome.project.id

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
        try:
            with in_use(repo_dir):
                data = gitproc.advertise(self.git, repo_dir, environ.get("HTTP_GIT_PROTOCOL", ""))
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
            except TooLarge:
                return text_response(start_response, 413, "Request body too large.")
            body = BytesIO(request)
            key = packcache.request_key(repo_dir, protocol, request)
            stored = cache.lookup(key)
            if stored is not None:
                start_response(status_line(200), [
                    ("Content-Type", "application/x-git-upload-pack-result"), *NO_CACHE])
                chunks = packcache.stream_file(stored)
                return _Streamed(next(chunks, b""), chunks, stored.close)
        held = ExitStack()
        if key:
            held.callback(cache.produced, key)
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
            if isinstance(run.input_error, TooLarge):
                return text_response(start_response, 413, "Request body too large.")
            reason = run.stderr.strip().splitlines()[-1:] or ["git upload-pack failed"]
            return text_response(start_response, 400, f"Bad request: {reason[0]}")
        start_response(status_line(200), [
            ("Content-Type", "application/x-git-upload-pack-result"), *NO_CACHE])
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
            else:
                with in_use(repo_dir):
                    handler = ForgeUploadPackHandler(backend, [str(project_id)], proto,
                                                     stateless_rpc=True)
                    assert isinstance(proto, FetchProtocol)
                    handler.repo = _AnyShaInWant(handler.repo, proto.read_first_section())
                    handler.handle()
            output.flush()
        except TooLarge:
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

    def _ref_checker(self, outcome: auth.Outcome, project_id: int,
                     environ: WSGIEnvironment) -> RefCheck:
        """Build the per-ref check: decide with the pure rules and record each decision."""
        principal, facts = outcome.principal, outcome.facts
        assert facts is not None
        path = environ.get("PATH_INFO", "")

        def check(ref: str, old: str, new: str, fast_forward: bool) -> perm.Decision:
            decision = perm.authorize_ref_update(principal, facts, ref, old, new, fast_forward)
            shown = ref.encode(errors="surrogateescape").decode(errors="replace")
            with self.flask_app.app_context():
                auth.record(self.state.now(), "POST", path, principal, "push_ref", decision,
                            db.session.get(Project, project_id), ref=shown)
                db.session.commit()
            return decision

        return check
