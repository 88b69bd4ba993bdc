"""Governance: the generated JSON Schemas are valid 2020-12, the committed snapshot stays
compatible (the CI gate), the checker tells breaking from additive, and the CLI works."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import msgspec
import pytest

from contracts import MESSAGE_SPECS, Subjects
from contracts.schema import (
    JSON_SCHEMA_DIALECT,
    Report,
    asyncapi,
    compare,
    dumps,
    format_report,
    json_schemas,
)
from gateway.cli import main
from gateway.commands.schema import load_schema_dir

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "contracts" / "schemas"
CURRENT = json_schemas()


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    assert set(CURRENT) == set(MESSAGE_SPECS) | {"dead_letter"}
    ids = set()
    for name, doc in CURRENT.items():
        assert doc["$schema"] == JSON_SCHEMA_DIALECT
        jsonschema.Draft202012Validator.check_schema(doc)
        ids.add(doc["$id"])
        if name in MESSAGE_SPECS:
            assert doc["title"] == name
            assert doc["x-erpgw"]["subject"] == Subjects().for_type(name)
            payload = doc["properties"]["payload"]["$ref"].rsplit("/", 1)[1]
            assert doc["$defs"][payload]["properties"]["type"] == {"enum": [name]}
    assert len(ids) == len(CURRENT)


def test_generation_is_deterministic() -> None:
    assert json_schemas() == CURRENT
    assert dumps(asyncapi()) == dumps(asyncapi())


def test_committed_snapshot_is_valid_and_the_code_is_compatible_with_it() -> None:
    """The CI gate: an incompatible change to a message fails here. Additive changes pass;
    re-export the snapshot (erpgw schema export contracts/schemas) in the same commit."""
    snapshot = load_schema_dir(SNAPSHOT)
    assert "invoice.issued.v1" in snapshot and "erp.journal.post.v1" in snapshot
    for doc in snapshot.values():
        jsonschema.Draft202012Validator.check_schema(doc)
    report = compare(snapshot, CURRENT)
    assert report.compatible, format_report(report, str(SNAPSHOT))


# ---------------------------------------------------------------- the checker, kind by kind


def schemas_of(*fields: tuple[Any, ...], tag: str = "thing.done.v1") -> dict[str, Any]:
    """A one-message schema set built from real msgspec structs, as the exporter builds it."""
    cls = msgspec.defstruct("Thing", list(fields), tag=tag, tag_field="type", frozen=True,
                            kw_only=True)
    _, defs = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    doc = {"$schema": JSON_SCHEMA_DIALECT, "$ref": "#/$defs/Thing", "$defs": defs,
           "x-erpgw": {"subject": f"erpgw.billing.evt.{tag}"}}
    return {"thing": msgspec.json.decode(msgspec.json.encode(doc))}


class Line(msgspec.Struct, frozen=True):
    amount: int


class LineWithSku(msgspec.Struct, frozen=True):
    amount: int
    sku: str = ""


class Tagged(msgspec.Struct, frozen=True, tag="a", tag_field="kind"):
    x: int


class OtherTagged(msgspec.Struct, frozen=True, tag="b", tag_field="kind"):
    y: int


BASE: list[tuple[Any, ...]] = [
    ("amount", int),
    ("memo", Annotated[str, msgspec.Meta(max_length=50)], ""),
    ("due", date | None, None),
    ("status", Literal["open", "paid"], "open"),
    ("lines", list[Line], []),
    ("terms", Tagged | None, None),
]


def with_fields(*changes: tuple[Any, ...], drop: str = "") -> list[tuple[Any, ...]]:
    names = {c[0] for c in changes}
    out = [f for f in BASE if f[0] != drop and f[0] not in names]
    return out + list(changes)


def replaced(name: str, *spec: Any) -> list[tuple[Any, ...]]:
    return [(name, *spec) if f[0] == name else f for f in BASE]


BREAKING_CASES = [
    ("field.removed", "$.memo", with_fields(drop="memo")),
    ("type.changed", "$.amount", replaced("amount", str)),
    ("type.changed", "$.due", replaced("due", date, date(2026, 1, 1))),  # no longer nullable
    ("type.changed", "$.due", replaced("due", str | None, None)),  # format date -> plain
    ("field.added_required", "$.currency", with_fields(("currency", str))),
    ("field.now_required", "$.memo", replaced("memo", Annotated[str, msgspec.Meta(
        max_length=50)])),
    ("field.now_optional", "$.amount", replaced("amount", int, 0)),
    ("enum.changed", "$.status", replaced("status", Literal["open", "paid", "void"], "open")),
    ("enum.changed", "$.status", replaced("status", Literal["open"], "open")),
    ("constraint.changed", "$.memo", replaced("memo", Annotated[str, msgspec.Meta(
        max_length=40)], "")),
    ("default.changed", "$.status", replaced("status", Literal["open", "paid"], "paid")),
    ("type.changed", "$.lines[]", replaced("lines", list[int], [])),
    ("field.removed", "$.lines[].amount", replaced("lines", list[dict[str, str]], [])),
    ("type.changed", "$.terms", replaced("terms", Tagged | OtherTagged | None, None)),
]


@pytest.mark.parametrize(("kind", "path", "fields"), BREAKING_CASES,
                         ids=[f"{k}:{p}" for k, p, _ in BREAKING_CASES])
def test_checker_catches_each_breaking_change(kind: str, path: str,
                                              fields: list[tuple[Any, ...]]) -> None:
    report = compare(schemas_of(*BASE), schemas_of(*fields))
    assert not report.compatible
    found = {(c.kind, c.path) for c in report.breaking}
    assert (kind, path) in found, format_report(report)
    text = format_report(report)
    assert "BREAKING" in text and path in text and text.endswith("instead")


def test_nested_struct_changes_are_found_by_shape() -> None:
    old = schemas_of(*BASE)
    new = schemas_of(*replaced("lines", list[LineWithSku], []))  # another def name, same role
    report = compare(old, new)
    assert report.compatible
    assert [(c.kind, c.path) for c in report.changes] == [("field.added", "$.lines[].sku")]


def test_checker_passes_additive_changes() -> None:
    new = schemas_of(*BASE, ("note", str, ""), ("reference", str | None, None))
    report = compare(schemas_of(*BASE), new)
    assert report.compatible
    assert {(c.kind, c.path) for c in report.changes} == {
        ("field.added", "$.note"), ("field.added", "$.reference")}
    assert format_report(report).endswith("OK: compatible")
    both = compare(schemas_of(*BASE), {**schemas_of(*BASE), **{"other": new["thing"]}})
    assert both.compatible and [c.kind for c in both.changes] == ["message.added"]
    assert compare(CURRENT, CURRENT) == Report([])


def test_checker_reports_removed_messages_and_moved_subjects() -> None:
    report = compare(schemas_of(*BASE), {})
    assert [(c.kind, c.breaking) for c in report.changes] == [("message.removed", True)]
    moved = compare(schemas_of(*BASE), schemas_of(*BASE, tag="thing.done.v2"))
    assert ("subject.changed", "$") in {(c.kind, c.path) for c in moved.breaking}


def test_checker_on_the_real_invoice() -> None:
    old = {"invoice.issued.v1": CURRENT["invoice.issued.v1"]}
    new = msgspec.json.decode(msgspec.json.encode(old))
    line = new["invoice.issued.v1"]["$defs"]["InvoiceLine"]
    line["properties"]["amount"] = {"type": "string"}
    del new["invoice.issued.v1"]["$defs"]["InvoiceIssued"]["properties"]["tax"]
    report = compare(old, new)
    assert {(c.kind, c.path) for c in report.breaking} >= {
        ("type.changed", "$.payload.lines[].amount"), ("field.removed", "$.payload.tax")}


# ---------------------------------------------------------------- the CLI


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_export_check_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "schemas"
    code, out, _ = run("schema", "export", str(snap), capsys=capsys)
    assert code == 0 and f"wrote {len(CURRENT)} JSON Schemas" in out
    assert sorted(p.stem for p in snap.glob("*.json")) == sorted(CURRENT)
    assert (snap / "invoice.issued.v1.json").read_bytes() == (
        SNAPSHOT / "invoice.issued.v1.json").read_bytes()

    code, out, _ = run("schema", "check", "--against", str(snap), capsys=capsys)
    assert code == 0 and "OK: compatible" in out

    # someone drops a field: the snapshot still has it, the "code" no longer does
    path = snap / "usage.recorded.v1.json"
    doc = msgspec.json.decode(path.read_bytes())
    doc["$defs"]["UsageRecorded"]["properties"]["quantity"]["minimum"] = 1
    doc["$defs"]["UsageRecorded"]["properties"]["meter_version"] = {"type": "integer"}
    doc["$defs"]["UsageRecorded"]["required"].append("meter_version")
    path.write_bytes(dumps(doc))
    code, out, _ = run("schema", "check", "--against", str(snap), capsys=capsys)
    assert code == 1
    assert "BREAKING  usage.recorded.v1  $.payload.meter_version  field.removed" in out
    assert "constraint.changed: minimum 1 -> 0" in out and "FAIL" in out

    code, out, _ = run("schema", "check", "--against", str(snap), "--json", capsys=capsys)
    result = msgspec.json.decode(out)
    assert code == 1 and result["compatible"] is False
    assert {c["kind"] for c in result["breaking"]} == {"field.removed", "constraint.changed"}
    assert result["additive"] == []

    (snap / "stale.v1.json").write_text("{}")
    code, _, err = run("schema", "export", str(snap), capsys=capsys)
    assert code == 0 and "stale.v1.json" in err


def test_cli_asyncapi_stdout_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run("schema", "asyncapi", capsys=capsys)
    doc = msgspec.json.decode(out)
    assert code == 0 and doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {Subjects().for_type(t) for t in MESSAGE_SPECS} <= addresses
    assert "erpgw.dlq.{lane}.{code}" in addresses and "erpgw.mon.metrics" in addresses
    target = tmp_path / "out" / "asyncapi.json"
    code, out, _ = run("schema", "asyncapi", "--out", str(target), capsys=capsys)
    assert code == 0 and "wrote AsyncAPI 3.0.0" in out
    assert msgspec.json.decode(target.read_bytes()) == doc


def test_cli_errors_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run("schema", "check", "--against", str(tmp_path / "nope"), capsys=capsys)
    assert code == 2 and "no such directory" in err
    code, _, err = run("schema", "check", "--against", str(tmp_path), capsys=capsys)
    assert code == 2 and "erpgw schema export" in err
    (tmp_path / "bad.json").write_text("{oops")
    code, _, err = run("schema", "check", "--against", str(tmp_path), capsys=capsys)
    assert code == 2 and "bad.json" in err
    code, out, _ = run("schema", capsys=capsys)
    assert code == 2 and "export" in out and "asyncapi" in out and "check" in out
    for sub, words in (("export", "2020-12"), ("asyncapi", "AsyncAPI 3.0"),
                       ("check", "exit status")):
        with pytest.raises(SystemExit) as info:
            main(["schema", sub, "--help"])
        assert info.value.code == 0
        assert words in capsys.readouterr().out


def test_ci_command_as_a_user_runs_it() -> None:
    r = subprocess.run([sys.executable, "-m", "gateway", "schema", "check", "--against",
                        str(SNAPSHOT)], capture_output=True, text=True, timeout=60, check=False,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: compatible" in r.stdout
