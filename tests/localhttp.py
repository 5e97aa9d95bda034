"""A URL where nothing listens, for the download tests (the local HTTP server itself is conftest's ``server``)."""
import socket


def closed_url(name: str) -> str:
    """A URL on a local port nobody listens on: the download fails at once, like offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
