"""A batched read that goes unanswered while the same keys read one by one are answered (an
identity whose broker authorization lacks the direct-get subject) costs one timeout, then the
bucket reads key by key for a while: not one timeout per batch."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from actors.infra import kv
from actors.infra.bus import BrokerUnavailable
from actors.infra.kv import KvBucket, KvEntry


def bucket(monkeypatch: pytest.MonkeyPatch, *, batch_answers: bool) -> tuple[KvBucket,
                                                                            list[str]]:
    b = KvBucket(Any, "versions")  # type: ignore[arg-type]  # no server: both reads stubbed
    calls: list[str] = []

    async def get_all(keys: list[str]) -> dict[str, KvEntry]:
        calls.append("batch")
        if not batch_answers:
            raise BrokerUnavailable("read 2 keys of versions: TimeoutError()")
        return {k: KvEntry(k, b"v", 1) for k in keys}

    async def get(key: str) -> KvEntry:
        calls.append("one")
        return KvEntry(key, b"v", 1)

    monkeypatch.setattr(b, "get_all", get_all)
    monkeypatch.setattr(b, "get", get)
    return b, calls


async def test_an_unanswered_batch_pauses_batched_reads_and_says_why(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    b, calls = bucket(monkeypatch, batch_answers=False)
    now = [1000.0]
    monkeypatch.setattr(kv.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="erpgw.kv"):
        first = await b.get_many(["a", "b"])
    assert calls == ["batch", "one", "one"]
    assert {k: e.value for k, e in first.items()} == {"a": b"v", "b": b"v"}
    assert [r.code for r in caplog.records] == ["kv.batch_read_unanswered"]  # type: ignore[attr-defined]
    assert "$JS.API.DIRECT.GET.KV_versions" in caplog.records[0].getMessage()
    calls.clear()
    await b.get_many(["a", "b"])
    assert calls == ["one", "one"]  # paused: no second timeout
    now[0] += kv._BATCH_READ_PAUSE_S
    calls.clear()
    await b.get_many(["a", "b"])
    assert calls[0] == "batch"  # tried again after the pause


async def test_an_answered_batch_is_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    b, calls = bucket(monkeypatch, batch_answers=True)
    await b.get_many(["a", "b", "c"])
    await b.get_many(["a", "b"])
    assert calls == ["batch", "batch"]
