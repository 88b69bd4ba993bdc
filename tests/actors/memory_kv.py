"""An in-memory KV bucket for unit tests of the shared state (``actors.infra.state``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from actors.infra.kv import KvConflict, KvEntry


class MemoryBucket:
    """An in-memory stand-in for ``actors.infra.kv.KvBucket`` with the same compare-and-set
    rules (revision 0 creates; N updates only while the key is at N; revisions grow per
    bucket like a stream's sequence), for unit tests without a broker. ``before_write`` runs
    before every conditional write (a test uses it to slip another writer in). ``reads``: the
    keys of each read round trip, in order (``get``: one key; ``get_many``: its keys in one,
    as the real bucket's batched direct get)."""

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.data: dict[str, tuple[bytes | None, int]] = {}
        self.seq = 0
        self.before_write: Callable[[str], Awaitable[None]] | None = None
        self.conflicts = 0
        self.reads: list[list[str]] = []

    def _entry(self, key: str) -> KvEntry:
        value, rev = self.data.get(key, (None, 0))
        return KvEntry(key, value, rev if value is not None else 0)

    async def get(self, key: str) -> KvEntry:
        self.reads.append([key])
        return self._entry(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, KvEntry]:
        wanted = list(dict.fromkeys(keys))
        self.reads.append(wanted)
        return {k: self._entry(k) for k in wanted}

    async def put_if(self, key: str, value: bytes, revision: int) -> int:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None  # once
            await hook(key)
        current = self.data.get(key, (None, 0))
        if (current[0] is None and revision != 0) or \
                (current[0] is not None and current[1] != revision):
            self.conflicts += 1
            raise KvConflict(f"{key} moved past {revision}")
        self.seq += 1
        self.data[key] = (value, self.seq)
        return self.seq

    async def put_many(self, writes: Iterable[tuple[str, bytes, int]]
                       ) -> dict[str, int | Exception]:
        out: dict[str, int | Exception] = {}
        for k, v, r in writes:
            try:
                out[k] = await self.put_if(k, v, r)
            except KvConflict as exc:
                out[k] = exc
        return out

    async def forget(self, key: str, *, keep_s: float = 3600.0) -> None:
        self.seq += 1
        self.data[key] = (None, self.seq)

    async def keys(self, key_prefix: str = "") -> list[str]:
        return sorted(k for k in self.data if k.startswith(key_prefix))
