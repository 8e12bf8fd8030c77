"""Benchmark forge against `git http-backend` serving the same repositories, in one run.

Both servers sit behind the same werkzeug HTTP server, so the ratio compares dulwich
(in-process, with forge's authorization) with git's own CGI backend. Figures are medians
in seconds; ratio = forge / http-backend (below 1 means forge is faster).

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forge import domain  # noqa: E402
from forge.config import ForgeConfig  # noqa: E402
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


class HttpBackend:
    """`git http-backend` as a WSGI app (CGI per request), served by werkzeug like forge."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
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
            while chunk := proc.stdout.read(65536):
                yield chunk
            proc.wait()

        return stream()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bench_repo(label: str, source: Path, forge: Forge, backend: HttpBackend, work: Path,
               runs: int) -> list[tuple[str, str, float, float]]:
    """Time each operation against both servers serving copies of `source`."""
    name = source.name.removesuffix(".git")
    if not _has_group(forge):
        forge.create_group("bench")
    project = forge.create_project(f"bench/{name}", visibility="public")
    forge_repo = forge.state.backend.path_for(project.id)
    shutil.rmtree(forge_repo)
    git("clone", "-q", "--bare", source, forge_repo)
    backend_repo = backend.root / f"{name}.git"
    git("clone", "-q", "--bare", source, backend_repo)
    git("config", "http.receivepack", "true", cwd=backend_repo)
    netloc = forge.url.split("//")[1]
    # Reads are anonymous on both sides (a public project); forge's push authenticates,
    # which costs git one extra round trip (the 401 challenge) that http-backend does not ask.
    urls = {"forge": f"http://{netloc}/bench/{name}.git",
            "http-backend": f"{backend.url}/{name}.git"}
    push_urls = {"forge": f"http://root:{forge.root_token}@{netloc}/bench/{name}.git",
                 "http-backend": urls["http-backend"]}
    rows = []
    for op in ("ls-remote", "full clone", "--depth 1 clone", "fetch 10 new commits", "push"):
        medians = {}
        for server, url in urls.items():
            medians[server] = measure(op, url, push_urls[server],
                                      work / f"{label}-{server}-{op.replace(' ', '_')}", runs)
        rows.append((label, op, medians["forge"], medians["http-backend"]))
        print(f"  {label:<14} {op:<22} {medians['forge']:8.3f} {medians['http-backend']:10.3f}"
              f" {medians['forge'] / medians['http-backend']:8.2f}", flush=True)
    return rows


def _has_group(forge: Forge) -> bool:
    with forge.app.app_context():
        try:
            domain.get_group("bench")
            return True
        except domain.NotFound:
            return False


def measure(op: str, url: str, push_url: str, work: Path, runs: int) -> float:
    """Median time of one git operation against `url` (`push_url` where it writes)."""
    work.mkdir(parents=True)
    if op == "ls-remote":
        return median_time(lambda: git("ls-remote", url), runs)
    if op in ("full clone", "--depth 1 clone"):
        extra = ["--depth", "1"] if op.startswith("--depth") else []
        targets = iter(work / f"c{i}" for i in range(runs))
        return median_time(lambda: git("clone", "-q", "--bare", *extra, url, next(targets)), runs)
    base = work / "base"
    git("clone", "-q", push_url, base)
    if op == "push":
        def prepare(i: int) -> None:
            (base / f"push{i}.txt").write_text(f"push {i}\n")
            git("add", "-A", cwd=base)
            git("commit", "-q", "-m", f"push {i}", cwd=base)
        counter = iter(range(runs))
        return median_time(lambda: git("push", "-q", "origin", f"HEAD:refs/heads/p{next(counter)}",
                                       cwd=base), runs, prepare)
    fetcher = work / "fetcher"
    git("clone", "-q", url, fetcher)

    def add_commits(i: int) -> None:
        git("checkout", "-q", "-B", f"f{i}", "origin/main", cwd=base)
        for n in range(10):
            (base / f"fetch{i}-{n}.txt").write_text(f"{i} {n}\n")
            git("add", "-A", cwd=base)
            git("commit", "-q", "-m", f"fetch {i}.{n}", cwd=base)
        git("push", "-q", "origin", f"f{i}", cwd=base)

    return median_time(lambda: git("fetch", "-q", "origin", cwd=fetcher), runs, add_commits)


def startup_times(tmp: Path, runs: int) -> tuple[float, float, float]:
    """In-process start (create_app + bind), `forge serve` to its listening line, fixture reset."""
    counter = iter(range(10 * runs))

    def start() -> None:
        server = ForgeServer(ForgeConfig(data_dir=tmp / f"start{next(counter)}"))
        server.server.server_close()

    in_process = median_time(start, runs)
    forge_bin = Path(sys.executable).parent / "forge"

    def serve() -> None:
        proc = subprocess.Popen([str(forge_bin), "serve", "--port", "0", "--quiet",
                                 "--data-dir", str(tmp / f"serve{next(counter)}")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.terminate()
        proc.wait()
        proc.stdout.close()

    process = median_time(serve, runs)
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
    return in_process, process, reset


def main() -> None:
    """Run every benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs, small repository only")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    runs = 3 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        in_process, process, reset = startup_times(tmp, runs)
        print(f"git {git('--version').decode().split()[-1]}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cores; medians of {runs} runs, seconds")
        print(f"forge start-up, in-process (create_app + bind): {in_process:.3f}")
        print(f"forge start-up, `forge serve` to its listening line: {process:.3f}")
        print(f"fixture reset (10 users, 10 projects, 1 job): {reset:.4f}")
        print()
        print(f"  {'repository':<14} {'operation':<22} {'forge':>8} {'http-backend':>10} {'ratio':>8}")
        repos = tmp / "sources"
        generate_repo(repos / "small.git", 10, 20)
        sources = [("10 commits", repos / "small.git")]
        if not args.quick:
            generate_repo(repos / "large.git", 2000, 500)
            sources.append(("2,000 commits", repos / "large.git"))
        server = ForgeServer(ForgeConfig(data_dir=tmp / "forge")).start()
        backend = HttpBackend(tmp / "backend")
        backend.root.mkdir()
        try:
            forge = Forge(server)
            for label, source in sources:
                bench_repo(label, source, forge, backend, tmp / "work", runs)
        finally:
            server.stop()
            backend.stop()


if __name__ == "__main__":
    main()
