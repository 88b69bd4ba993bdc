"""Schema drift: which fields of a message this reader does not know.

Readers ignore unknown fields, so a gateway of an older version keeps working while a newer
one adds fields within a version. Ignored silently, though, drift is invisible: an upgrade
that was never rolled out, a peer sending fields nobody reads. ``unknown_fields`` names them
(as JSON paths) so a caller can count them, e.g. on a sample of the messages it decodes; it
costs an untyped decode plus a walk, so it is not on every message's path by default.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from msgspec import inspect as mi

__all__ = ["unknown_fields"]


@lru_cache(maxsize=256)
def _info(type_: Any) -> mi.Type:
    return mi.type_info(type_)


def unknown_fields(data: Any, type_: Any) -> list[str]:
    """JSON paths of the keys in ``data`` that ``type_`` does not define.

    ``data`` is the message decoded *without* a type (``msgspec.json.decode(raw)``); whatever
    does not fit ``type_`` otherwise (wrong types, missing fields) is the typed decoder's
    business and is skipped here. Pure; runs in the caller's task.
    """
    out: list[str] = []
    _walk(_info(type_), data, "$", out)
    return out


def _struct_for(union: mi.UnionType, data: dict[str, Any]) -> mi.StructType | None:
    structs = [t for t in union.types if isinstance(t, mi.StructType)]
    for s in structs:
        if s.tag_field is not None and data.get(s.tag_field) == s.tag:
            return s
    untagged = [s for s in structs if s.tag_field is None]
    return untagged[0] if untagged else None


def _walk(info: mi.Type, data: Any, path: str, out: list[str]) -> None:
    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        if isinstance(data, dict):
            struct = _struct_for(info, data)
            if struct is not None:
                _walk(struct, data, path, out)
        elif isinstance(data, list):
            for member in info.types:
                if isinstance(member, mi.ListType | mi.VarTupleType | mi.TupleType):
                    _walk(member, data, path, out)
                    break
    elif isinstance(info, mi.StructType):
        if not isinstance(data, dict):
            return
        fields = {f.encode_name: f for f in info.fields}
        for key, value in data.items():
            field = fields.get(key)
            if field is not None:
                _walk(field.type, value, f"{path}.{key}", out)
            elif key != info.tag_field:
                out.append(f"{path}.{key}")
    elif isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        if isinstance(data, list):
            for i, item in enumerate(data):
                _walk(info.item_type, item, f"{path}[{i}]", out)
    elif isinstance(info, mi.TupleType):
        if isinstance(data, list):
            for i, (item_type, item) in enumerate(zip(info.item_types, data, strict=False)):
                _walk(item_type, item, f"{path}[{i}]", out)
    elif isinstance(info, mi.DictType) and isinstance(data, dict):
        for key, value in data.items():
            _walk(info.value_type, value, f"{path}.{key}", out)

