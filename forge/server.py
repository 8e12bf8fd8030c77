"""Run a forge on a real socket: in the foreground (`forge serve`) or in a background thread."""

from __future__ import annotations

import re
import socket
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from forge.app import create_app
from forge.config import ForgeConfig, http_url
from forge.datadir import DataDirLock
from forge.state import ForgeState, state_of

SECRET_PARAMS = re.compile(r"(?i)((?:job_token|private_token|access_token|token|password)=)[^&\s]+")


def redact(text: str) -> str:
    """Hide secret query parameters so tokens never reach a log."""
    return SECRET_PARAMS.sub(r"\1[FILTERED]", text)


class RedactingRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler with secrets filtered out of the access log."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Log like werkzeug, but never a token."""
        super().log(type, redact(message % args if args else message).replace("%", "%%"))

    def handle_expect_100(self) -> bool:
        """Send nothing yet: werkzeug answers `Expect: 100-continue` itself as the request
        reaches the app, and the standard library's answer here made a second
        `HTTP/1.1 100 Continue`."""
        return True


class ForgeServer:
    """A forge app bound to host:port (0 picks a free port), with its real URL known."""

    def __init__(self, config: ForgeConfig, host: str = "127.0.0.1", port: int = 0,
                 lock: DataDirLock | None = None, sock: socket.socket | None = None) -> None:
        """Build the app and serve it on `sock` if given (bound to host:port), else bind here."""
        self.app = create_app(config, lock=lock)
        self.lock: DataDirLock = self.app.extensions["forge_lock"]
        self.state: ForgeState = state_of(self.app)
        # A connection silent for `request_timeout` seconds is closed, so idle clients
        # cannot hold the server's threads and descriptors.
        handler = type("RequestHandler", (RedactingRequestHandler,),
                       {"timeout": self.state.config.request_timeout})
        try:
            self.server: BaseWSGIServer = make_server(
                host, port, self.app, threaded=True, request_handler=handler,
                fd=sock.fileno() if sock else None)
        except BaseException:
            self.state.housekeeper.stop()
            self.lock.release()
            raise
        finally:
            if sock is not None:
                sock.close()  # werkzeug serves a duplicate of it
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.host = host
        self.port: int = self.server.port
        self.url = http_url(host, self.port)
        self.state.config = self.state.config.replace(base_url=self.url)
        self._thread: threading.Thread | None = None
        self._serving = False

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._serving = True
        self.server.serve_forever()

    def start(self) -> ForgeServer:
        """Serve in a daemon thread."""
        self._serving = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="forge-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and let another forge take the data directory."""
        self.state.housekeeper.stop()
        if self._serving:  # shutdown() waits for a serve_forever that never ran
            self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.lock.release()
