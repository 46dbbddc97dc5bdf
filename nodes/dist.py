"""Distribution: placeholder until the transport is wired in."""

from __future__ import annotations

from typing import Any


def start(name: str, cookie: str | None = None, **options: Any) -> str:
    raise NotImplementedError("distribution is not wired in yet")


def connect(node_name: str) -> bool:
    return False


def disconnect(node_name: str) -> bool:
    return False


def list_nodes() -> list[str]:
    return []
