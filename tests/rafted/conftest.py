"""The ``cluster`` fixture: members started through it are killed after the test, crashes fail it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rafted_support import Cluster

import nodes


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    nodes.process_flag("trap_exit", True)
    nodes.flush()
    c = Cluster()
    yield c
    crashes = c.teardown()
    assert not crashes, "members crashed:\n" + "\n".join(f"{p}: {tb}" for p, tb in crashes)
