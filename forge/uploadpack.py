"""dulwich's upload-pack, made to answer real git clients as GitLab does (the dulwich engine).

Used when no `git` binary serves fetches: fetches into shallow clones, fetches of any
existing sha, and no partial clone (dulwich's filtered packs are broken).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dulwich.object_store import MissingObjectFinder
from dulwich.objects import ObjectID
from dulwich.protocol import CAPABILITY_FILTER, ReceivableProtocol
from dulwich.server import UploadPackHandler


class ForgeUploadPackHandler(UploadPackHandler):
    """upload-pack without partial clone: dulwich serves broken `--filter` results."""

    def capabilities(self) -> list[bytes]:
        """dulwich's capabilities without `filter` (clients fall back to full clones), and
        with fetches of any reachable sha (see `AnyShaInWant`)."""
        return [*(cap for cap in super().capabilities() if cap != CAPABILITY_FILTER),
                b"allow-reachable-sha1-in-want"]

    def set_client_capabilities(self, caps: Iterable[bytes]) -> None:
        """Ignore a `filter` the client sends anyway (git does, after warning it is unsupported)."""
        super().set_client_capabilities([cap for cap in caps if not cap.startswith(CAPABILITY_FILTER)])


class AnyShaInWant:
    """A repository whose refs, for one fetch, also name the objects the client wants.

    dulwich refuses a want that is not an advertised tip ("Client wants invalid object");
    GitLab allows any sha (`uploadpack.allowAnySHA1InWant`), and a fetch whose refs moved
    between advertisement and request relies on it. A fetch into a shallow clone that
    does not deepen (`client_shallow`: its shallow commits) gets what git sends: the
    client has those commits but none of their parents, so what it has stops there.
    """

    PREFIX = b"refs/forge-wants/"

    def __init__(self, repo: Any, wants: Iterable[bytes],
                 client_shallow: Iterable[bytes] = ()) -> None:
        self._repo = repo
        store = repo.object_store
        self._extra = {self.PREFIX + sha: sha for sha in wants if _exists(store, sha)}
        self._shallow = {ObjectID(sha) for sha in client_shallow if _exists(store, sha)}

    def get_refs(self) -> dict[bytes, bytes]:
        """The real refs plus one per wanted object that exists."""
        return {**self._repo.get_refs(), **self._extra}

    def get_peeled(self, ref: bytes) -> bytes | None:
        """Peel a ref (a wanted object peels to itself)."""
        return self._extra[ref] if ref in self._extra else self._repo.get_peeled(ref)

    def find_missing_objects(self, determine_wants: Any, graph_walker: Any, progress: Any = None,
                             *, get_tagged: Any = None, depth: int | None = None) -> Any:
        """dulwich's own method, run against these refs; into a shallow clone, the objects
        reachable from the wants and not from the haves, neither walked past the client's
        shallow commits (dulwich would drop the haves and send everything)."""
        if not self._shallow:
            return type(self._repo).find_missing_objects(
                self, determine_wants, graph_walker, progress, get_tagged=get_tagged, depth=depth)
        store = self.object_store
        wants = determine_wants({ref: sha for ref, sha in self.get_refs().items() if sha in store},
                                depth)
        if not wants:
            return MissingObjectFinder(store, haves=[], wants=[])
        haves = store.find_common_revisions(graph_walker)
        return MissingObjectFinder(store, haves=haves, wants=wants, shallow=self._shallow,
                                   progress=progress, get_tagged=get_tagged)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


def _exists(store: Any, sha: bytes) -> bool:
    try:
        return ObjectID(sha) in store
    except (ValueError, TypeError):
        return False


class FetchProtocol(ReceivableProtocol):
    """The upload-pack protocol, accepting a fetch into a shallow clone.

    A shallow clone that fetches without `--depth` sends `shallow` lines but no
    `deepen`. git's upload-pack then sends no shallow-update section; dulwich insists
    on a `deepen` and fails. With no `deepen` in the request, the `shallow` lines are
    taken out before dulwich reads them and kept in `client_shallow`, for the pack to
    stop at them (see `AnyShaInWant`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[bytes | None] = []
        self._first_section_read = False
        self.client_shallow: set[bytes] = set()

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
            self.client_shallow = {line[8:48] for line in section if line and line.startswith(b"shallow ")}
            section = [line for line in section if not (line and line.startswith(b"shallow "))]
        self._pending = section
        return [line[5:45] for line in section if line and line.startswith(b"want ")]
