"""Tiny, torch-free networking helper shared by the worker and the launchers."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nobody listens on now (a concurrent run may hold DeepSpeed's default 29500)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
