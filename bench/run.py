"""Benchmark forge against `git http-backend` serving the same repositories, in one run.

forge runs as `forge serve` once per fetch engine (git upload-pack, dulwich), each in its
own process; http-backend sits behind a werkzeug server in this process. The servers take
turns run by run, so load on the machine hits all alike. Figures are medians in seconds;
ratio = forge / http-backend (below 1 means forge is faster). A second table sets 8 and 16
concurrent clones against `forge serve` with 1 worker and with `--workers 4` (both on a
throwaway PostgreSQL when its server programs are installed, else on SQLite).

    make bench                 # or: .venv/bin/python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forge.config import ForgeConfig  # noqa: E402
from forge.httpbackend import HttpBackend, configure  # noqa: E402
from forge.server import ForgeServer  # noqa: E402
from forge.testing import Forge  # noqa: E402

GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
           "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


def git(*args: str | Path, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    """Run git quietly; raise on failure."""
    result = subprocess.run(["git", "-c", "protocol.version=0", *map(str, args)], cwd=cwd,
                            env=GIT_ENV, input=input, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {args} failed: {result.stderr.decode()}")
    return result.stdout


def median_time(action: Callable[[], object], runs: int,
                setup: Callable[[int], object] | None = None) -> float:
    """Median wall time of `action` over `runs`, calling `setup(i)` untimed before each."""
    times = []
    for i in range(runs):
        if setup is not None:
            setup(i)
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generate_repo(path: Path, commits: int, files: int) -> None:
    """Build a bare repository with `commits` commits over `files` files, via fast-import."""
    git("init", "-q", "--bare", "-b", "main", path)
    lines: list[bytes] = []
    for c in range(commits):
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer Bench <bench@example.com> {1_700_000_000 + c} +0000\n".encode())
        message = f"commit {c}\n".encode()
        lines.append(b"data %d\n%s" % (len(message), message))
        touched = range(files) if c == 0 else [(c * 7 + k) % files for k in range(3)]
        for f in touched:
            body = "\n".join(f"file {f} line {n} rev {c}" for n in range(40)).encode() + b"\n"
            lines.append(f"M 100644 inline src/d{f % 20}/f{f}.txt\n".encode())
            lines.append(b"data %d\n%s\n" % (len(body), body))
    git("fast-import", "--quiet", cwd=path, input=b"".join(lines))
    git("gc", "-q", "--aggressive", cwd=path)


class ForgeProcess:
    """`forge serve` in its own process (so its peak RSS is its own), with one engine."""

    def __init__(self, data_dir: Path, engine: str, workers: int = 1, database_url: str = "") -> None:
        self.token = "glpat-bench-root-token-01"
        extra = ["--workers", str(workers)] + (["--database-url", database_url] if database_url else [])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forge.cli", "serve", "--port", "0", "--quiet",
             "--data-dir", str(data_dir), "--root-token", self.token, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "FORGE_GIT_ENGINE": engine})
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().split()[-1]
        self.data_dir = data_dir
        self.group = self._api("POST", "groups", {"name": "bench", "path": "bench"})["id"]

    def _api(self, method: str, path: str, body: dict[str, Any]) -> Any:
        answer = requests.request(method, f"{self.url}/api/v4/{path}", json=body, timeout=60,
                                  headers={"PRIVATE-TOKEN": self.token})
        answer.raise_for_status()
        return answer.json()

    def add(self, name: str, source: Path) -> str:
        """Serve a copy of `source` as public project bench/<name>; return its URL."""
        project = self._api("POST", "projects", {"name": name, "namespace_id": self.group,
                                                 "visibility": "public"})
        repo = self.data_dir / "repositories" / f"{project['id']}.git"
        shutil.rmtree(repo)
        git("clone", "-q", "--bare", source, repo)
        return f"{self.url}/bench/{name}.git"

    def push_url(self, url: str) -> str:
        """`url` with root's credentials."""
        return url.replace("http://", f"http://root:{self.token}@")

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Replay:
    """The floor of any cache: answers each request with the bytes http-backend gave the
    first time, with no git, no authorization and no database."""

    def __init__(self, backend: HttpBackend) -> None:
        self.backend = backend
        self.answers: dict[tuple[str, ...], tuple[str, list[tuple[str, str]], bytes]] = {}
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = get_input_stream(environ).read()
        key = (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""),
               environ.get("HTTP_GIT_PROTOCOL", ""), body.hex())
        if key not in self.answers:
            seen: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
                seen.update(status=status, headers=headers)

            inner = {**environ, "wsgi.input": BytesIO(body), "CONTENT_LENGTH": str(len(body))}
            data = b"".join(self.backend.app(inner, capture))
            self.answers[key] = (seen["status"], seen["headers"], data)
        status, headers, data = self.answers[key]
        start_response(status, headers)
        return [data]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer_times(replay: Replay, bases: dict[str, str], runs: int) -> dict[str, float]:
    """Median time to the last byte of a clone's pack request (the one git sent to the
    replay server), sent again by a plain HTTP client that reads and drops the answer."""
    fetches = [key for key in replay.answers
               if key[0] == "POST" and b"done" in bytes.fromhex(key[4])]
    _, path, _, protocol, body_hex = fetches[-1]
    body = bytes.fromhex(body_hex)
    headers = {"Content-Type": "application/x-git-upload-pack-request", "Git-Protocol": protocol}
    times: dict[str, list[float]] = {key: [] for key in bases}
    for _ in range(runs):
        for key, base in bases.items():
            start = time.perf_counter()
            with requests.post(base + path, data=body, headers=headers, stream=True,
                               timeout=120) as answer:
                answer.raise_for_status()
                for _chunk in answer.iter_content(1 << 16):
                    pass
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


OPERATIONS = ("ls-remote", "full clone", "--depth 1 clone", "--depth 20 fetch (runner)",
              "fetch 10 new commits", "8 concurrent clones", "repeated clone", "push")
FLEET_OPERATIONS = ("8 concurrent clones", "16 concurrent clones")


def bench_repo(label: str, source: Path, servers: dict[str, Any], work: Path, runs: int,
               operations: tuple[str, ...] = OPERATIONS) -> list[tuple[str, str, dict[str, float]]]:
    """Time each operation against every server, interleaving them run by run."""
    name = source.name.removesuffix(".git")
    urls: dict[str, str] = {}
    push_urls: dict[str, str] = {}
    for key, server in servers.items():
        if isinstance(server, HttpBackend):
            repo = server.root / f"{name}.git"
            git("clone", "-q", "--bare", source, repo)
            configure(repo)
            urls[key] = f"{server.url}/{name}.git"
            push_urls[key] = urls[key].replace("http://", "http://bench:bench@")
        else:
            urls[key] = server.add(name, source)
            push_urls[key] = server.push_url(urls[key])
    rows = []
    for op in operations:
        medians = measure(op, urls, push_urls, work / f"{label}-{op.replace(' ', '_')}", runs)
        rows.append((label, op, medians))
        base = medians["http-backend"]
        print(f"  {label:<14} {op:<26} " + " ".join(
            f"{medians[k]:8.3f}" for k in servers) + " " + " ".join(
            f"{medians[k] / base:7.2f}" for k in servers if k != "http-backend"), flush=True)
    return rows


def measure(op: str, urls: dict[str, str], push_urls: dict[str, str], work: Path,
            runs: int) -> dict[str, float]:
    """Median time of one git operation per server, the servers taking turns run by run."""
    work.mkdir(parents=True)
    times: dict[str, list[float]] = {key: [] for key in urls}
    state: dict[str, Any] = {}
    for key in urls:
        state[key] = prepare(op, urls[key], push_urls[key], work / key)
    for i in range(runs):
        for key in urls:
            action = state[key](i)
            start = time.perf_counter()
            action()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def prepare(op: str, url: str, push_url: str, work: Path) -> Callable[[int], Callable[[], object]]:
    """Set up `op` against one server; return run number -> the action to time."""
    work.mkdir(parents=True)
    if op == "ls-remote":
        return lambda i: lambda: git("ls-remote", url)
    if op in ("full clone", "--depth 1 clone", "repeated clone"):
        extra = ["--depth", "1"] if op.startswith("--depth") else []
        return lambda i: lambda: git("clone", "-q", "--bare", *extra, url, work / f"c{i}")
    if op.endswith(" concurrent clones"):
        from concurrent.futures import ThreadPoolExecutor

        clients = int(op.split()[0])

        def storm(i: int) -> Callable[[], object]:
            def run() -> None:
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    list(pool.map(lambda n: git("clone", "-q", "--bare", url, work / f"s{i}-{n}"),
                                  range(clients)))
            return run
        return storm
    if op == "--depth 20 fetch (runner)":
        def runner(i: int) -> Callable[[], object]:
            target = work / f"r{i}"
            git("init", "-q", target)
            git("remote", "add", "origin", url, cwd=target)
            return lambda: git("-c", "protocol.version=2", "fetch", "-q", "--prune", "--depth", "20",
                               "origin", "+refs/heads/main:refs/remotes/origin/main",
                               "+refs/tags/*:refs/tags/*", cwd=target)
        return runner
    base = work / "base"
    git("clone", "-q", push_url, base)
    if op == "push":
        def push(i: int) -> Callable[[], object]:
            (base / f"push{i}.txt").write_text(f"push {i}\n")
            git("add", "-A", cwd=base)
            git("commit", "-q", "-m", f"push {i}", cwd=base)
            return lambda: git("push", "-q", "origin", f"HEAD:refs/heads/p{i}", cwd=base)
        return push
    fetcher = work / "fetcher"
    git("clone", "-q", url, fetcher)

    def add_commits(i: int) -> Callable[[], object]:
        git("checkout", "-q", "-B", f"f{i}", "origin/main", cwd=base)
        for n in range(10):
            (base / f"fetch{i}-{n}.txt").write_text(f"{i} {n}\n")
            git("add", "-A", cwd=base)
            git("commit", "-q", "-m", f"fetch {i}.{n}", cwd=base)
        git("push", "-q", "origin", f"f{i}", cwd=base)
        return lambda: git("fetch", "-q", "origin", cwd=fetcher)

    return add_commits


def startup_times(tmp: Path, runs: int) -> tuple[float, float, float, float]:
    """In-process start (create_app + bind), `forge serve` to its listening line and to its
    first answer (a new data directory each time), fixture reset."""
    counter = iter(range(10 * runs))

    def start() -> None:
        server = ForgeServer(ForgeConfig(data_dir=tmp / f"start{next(counter)}"))
        server.server.server_close()

    in_process = median_time(start, runs)
    forge_bin = Path(sys.executable).parent / "forge"

    def serve(answered: bool) -> Callable[[], None]:
        def run() -> None:
            proc = subprocess.Popen([str(forge_bin), "serve", "--port", "0", "--quiet",
                                     "--data-dir", str(tmp / f"serve{next(counter)}")],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if answered:
                requests.get(line.split()[-1] + "/-/health", timeout=30).raise_for_status()
            proc.terminate()
            proc.wait()
            proc.stdout.close()
        return run

    process = median_time(serve(False), runs)
    answered = median_time(serve(True), runs)
    config = ForgeConfig(data_dir=tmp / "reset", password_hash_method="pbkdf2:sha256:1000")
    server = ForgeServer(config).start()
    forge = Forge(server)

    def populate(_: int) -> None:
        forge.create_group("g")
        for i in range(10):
            forge.create_user(f"u{i}")
            forge.create_project(f"g/p{i}", files={"README.md": "x"})
        forge.start_job("g/p0", "root")

    reset = median_time(forge.reset, runs, populate)
    server.stop()
    return in_process, process, answered, reset


def make_sources(repos: Path, quick: bool) -> list[tuple[str, Path]]:
    """Generate the benchmark's repositories: the small one, and unless `quick` the large."""
    generate_repo(repos / "small.git", 10, 20)
    sources = [("10 commits", repos / "small.git")]
    if not quick:
        generate_repo(repos / "large.git", 3000, 500)
        sources.append(("3,000 commits", repos / "large.git"))
    return sources


def main() -> None:
    """Run every benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs, small repository only")
    parser.add_argument("--fleet", action="store_true", help="only the 1 and 4 worker table")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5, --quick 3)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    runs = args.runs or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.fleet:
            bench_workers(make_sources(tmp / "sources", args.quick), tmp, runs)
            return
        in_process, process, answered, reset = startup_times(tmp, runs)
        print(f"git {git('--version').decode().split()[-1]}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cores; medians of {runs} interleaved runs, seconds")
        print(f"forge start-up, in-process (create_app + bind): {in_process:.3f}")
        print(f"forge start-up, `forge serve` to its listening line: {process:.3f}")
        print(f"forge start-up, `forge serve` to its first answer (GET /-/health): {answered:.3f}")
        print(f"fixture reset (10 users, 10 projects, 1 job): {reset:.4f}")
        print()
        sources = make_sources(tmp / "sources", args.quick)
        backend = HttpBackend(tmp / "backend", push_auth=True)
        backend.root.mkdir()
        servers: dict[str, Any] = {
            "forge-git": ForgeProcess(tmp / "forge-git", "git"),
            "forge-dulwich": ForgeProcess(tmp / "forge-dulwich", "dulwich"),
            "http-backend": backend,
        }
        print(f"  {'repository':<14} {'operation':<26} {'git':>8} {'dulwich':>8} {'backend':>8}"
              f" {'git/b':>7} {'dul/b':>7}")
        try:
            for label, source in sources:
                bench_repo(label, source, servers, tmp / "work", runs)
            label, source = sources[-1]
            replay = Replay(backend)
            name = source.name.removesuffix(".git")
            urls = {"replay": f"{replay.url}/{name}.git", "http-backend": f"{backend.url}/{name}.git"}
            git("clone", "-q", "--bare", urls["replay"], tmp / "work" / "replay-warm")
            floor = measure("repeated clone", urls, urls, tmp / "work" / "replay", runs)
            replay.stop()
            print(f"  {label:<14} {'repeated clone, replayed':<26} {floor['replay']:8.3f} "
                  f"(recorded bytes, no git: the floor of any cache; "
                  f"{floor['replay'] / floor['http-backend']:.2f} of http-backend's "
                  f"{floor['http-backend']:.3f})")
            answer = answer_times(replay, {"forge-git": f"{servers['forge-git'].url}/bench",
                                           "http-backend": backend.url}, runs)
            print(f"  {label:<14} {'repeated clone, answer':<26} {answer['forge-git']:8.3f} "
                  f"{'':>8} {answer['http-backend']:8.3f} "
                  f"{answer['forge-git'] / answer['http-backend']:7.2f}  (the clone's pack "
                  f"request alone, read by a plain HTTP client: the server's share)")
            print()
            for key in ("forge-git", "forge-dulwich"):
                print(f"{key} server peak RSS (VmHWM): {servers[key].peak_rss_mb():.0f} MB")
        finally:
            for server in servers.values():
                server.stop()
        print()
        bench_workers(sources, tmp, runs)


def bench_workers(sources: list[tuple[str, Path]], tmp: Path, runs: int) -> None:
    """Concurrent clones against 1 and 4 forge workers (git engine) and http-backend."""
    from forge.pgcluster import PostgresCluster, PostgresUnavailable

    try:
        cluster: PostgresCluster | None = PostgresCluster()
    except PostgresUnavailable:
        cluster = None
    backend = HttpBackend(tmp / "backend-workers")
    backend.root.mkdir()
    servers: dict[str, Any] = {  # both on the same kind of database
        "1 worker": ForgeProcess(tmp / "forge-1", "git",
                                 database_url=cluster.create_database() if cluster else ""),
        "4 workers": ForgeProcess(tmp / "forge-4", "git", workers=4,
                                  database_url=cluster.create_database() if cluster else ""),
        "http-backend": backend,
    }
    print(f"1 worker and --workers 4, on {'PostgreSQL' if cluster else 'SQLite'}")
    print(f"  {'repository':<14} {'operation':<26} {'1 wkr':>8} {'4 wkrs':>8} {'backend':>8}"
          f" {'1/b':>7} {'4/b':>7}")
    try:
        for label, source in sources:
            bench_repo(label, source, servers, tmp / "work-workers", runs, FLEET_OPERATIONS)
    finally:
        for server in servers.values():
            server.stop()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
