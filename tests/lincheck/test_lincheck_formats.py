"""Parsers for the Jepsen etcd log and kv EDN formats, on small inline samples."""

from __future__ import annotations

import math

import pytest

from lincheck.formats import Keyword, load_file, parse_edn, parse_etcd_log, parse_kv
from lincheck.history import Status

pytestmark = pytest.mark.timeout(30)

ETCD = """\
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:write\t3
INFO  jepsen.util - 2\t:invoke\t:cas\t[3 4]
INFO  jepsen.util - 3\t:invoke\t:cas\t[0 1]
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1\t:ok\t:write\t3
INFO  jepsen.util - 2\t:ok\t:cas\t[3 4]
INFO  jepsen.util - 3\t:fail\t:cas\t[0 1]
INFO  jepsen.util - :nemesis\t:info\t:start\t"partitioned"
INFO  jepsen.util - 4\t:invoke\t:write\t2
INFO  jepsen.util - 4\t:info\t:write\t:timed-out
INFO  jepsen.util - 5   :invoke :read   nil
INFO  jepsen.util - 5   :fail   :read   :timed-out
INFO  jepsen.util - 6\t:invoke\t:cas\t[4 0]
"""


def test_parse_etcd_log() -> None:
    h = parse_etcd_log(ETCD)
    assert h.metadata["model"] == {"name": "register", "initial": None}
    by_process = {op.process: op for op in h}
    assert len(h) == 7
    read = by_process[0]
    assert (read.f, read.value, read.result, read.status, read.invoke, read.complete) == (
        "read", None, None, Status.OK, 0, 4)
    assert by_process[1].value == 3
    assert (by_process[2].value, by_process[2].result) == ((3, 4), True)
    # ":fail :cas" means the cas ran and did not swap.
    assert (by_process[3].status, by_process[3].result) == (Status.OK, False)
    # ":info" and ":fail :read :timed-out" are indeterminate, as is an invoke that never ends.
    for p in (4, 5, 6):
        assert by_process[p].status is Status.UNKNOWN and by_process[p].end == math.inf
    assert [op.invoke for op in h] == sorted(op.invoke for op in h)


def test_parse_kv() -> None:
    text = "\n".join([
        '{:process 0, :type :invoke, :f :append, :key "3", :value "x 0 1 y"}',
        '{:process 1, :type :invoke, :f :get, :key "3", :value nil}',
        '{:process 0, :type :ok, :f :append, :key "3", :value "x 0 1 y"}',
        '{:process 1, :type :ok, :f :get, :key "3", :value "x 0 1 y"}',
        '{:process 2, :type :invoke, :f :put, :key "4", :value "a \\"quoted\\" v"}',
    ])
    h = parse_kv(text)
    assert h.metadata["model"] == {"name": "kv", "initial": ""}
    append, get, put = h.operations
    assert (append.f, append.key, append.value, append.status, append.complete) == (
        "append", "3", "x 0 1 y", Status.OK, 2)
    assert (get.f, get.value, get.result, get.invoke, get.complete) == ("get", None, "x 0 1 y", 1, 3)
    assert (put.value, put.status) == ('a "quoted" v', Status.UNKNOWN)
    assert h.keys() == ["3", "4"]


def test_parse_edn_subset() -> None:
    assert parse_edn('{:a 1, :b [1 -2 "s"], :c nil, :d true, :e :kw}') == {
        "a": 1, "b": (1, -2, "s"), "c": None, "d": True, "e": Keyword("kw"),
    }
    assert repr(parse_edn(":timed-out")) == ":timed-out"
    with pytest.raises(ValueError):
        parse_edn("{:a 1")
    with pytest.raises(ValueError):
        parse_edn("[1 2} ")


def test_completion_without_invocation_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pending invocation"):
        parse_etcd_log("INFO  jepsen.util - 0\t:ok\t:read\t1\n")


def test_load_file_sniffs_format(tmp_path) -> None:
    etcd = tmp_path / "h.log"
    etcd.write_text(ETCD)
    kv = tmp_path / "h.txt"
    kv.write_text('{:process 0, :type :invoke, :f :get, :key "1", :value nil}\n')
    assert load_file(etcd).metadata["model"]["name"] == "register"
    assert load_file(kv).metadata["model"]["name"] == "kv"
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    with pytest.raises(ValueError):
        load_file(junk)
