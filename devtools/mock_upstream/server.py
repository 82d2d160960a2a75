"""Running the mock: under uvicorn in the foreground, or in a background thread for tests."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from devtools.mock_upstream.app import MockUpstreamApp, create_mock_app
from devtools.mock_upstream.directives import MockConfig


def _uvicorn_config(app: MockUpstreamApp, host: str, port: int, *, quiet_logging: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        # In a host process (tests) leave its logging set-up alone instead of installing uvicorn's.
        log_config=None if quiet_logging else uvicorn.config.LOGGING_CONFIG,
    )


def serve_mock(host: str = "127.0.0.1", port: int = 9100, config: MockConfig | None = None) -> None:
    """Run the mock with uvicorn (uvloop, httptools, no access log) until interrupted."""
    uvicorn.Server(_uvicorn_config(create_mock_app(config), host, port, quiet_logging=False)).run()


class MockServerThread:
    """The mock under uvicorn in a background thread on a free port: `with MockServerThread() as m: m.url`."""

    def __init__(self, config: MockConfig | None = None, host: str = "127.0.0.1") -> None:
        self.app = create_mock_app(config)
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self._server = uvicorn.Server(_uvicorn_config(self.app, host, self.port, quiet_logging=True))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="mock-upstream", daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock upstream did not start")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread.is_alive()

    def __enter__(self) -> MockServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
