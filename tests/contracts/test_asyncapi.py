"""The AsyncAPI document, validated by the official parser (``@asyncapi/parser`` from npm).

The parser is installed on first use into ``.venv/npm`` (``npm install --prefix``) and reused
afterwards, so only the first run pays for the download (~10 s). Skipped, saying why, only
when node or npm is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts import LANES, Subjects
from contracts.schema import asyncapi, dumps

ROOT = Path(__file__).resolve().parents[2]
NPM_PREFIX = ROOT / ".venv" / "npm"
PARSER = "@asyncapi/parser@3"

VALIDATE_JS = """\
// Parse an AsyncAPI document with the official parser; print its diagnostics as JSON.
const { Parser } = require('@asyncapi/parser');
const fs = require('fs');
(async () => {
  const { document, diagnostics } = await new Parser().parse(
    fs.readFileSync(process.argv[2], 'utf8'));
  console.log(JSON.stringify({
    parsed: document !== undefined,
    diagnostics: diagnostics.map(d => ({
      severity: d.severity, code: d.code, message: d.message, path: d.path })),
  }));
})().catch(err => { console.error(err); process.exit(2); });
"""


@pytest.fixture(scope="session")
def parse_asyncapi(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any], Any]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the official AsyncAPI parser "
                    "(@asyncapi/parser); install Node.js to validate the AsyncAPI document")
    if not (NPM_PREFIX / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
        NPM_PREFIX.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit",
                            "--no-fund", "--loglevel=error", PARSER],
                           capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0, f"npm install {PARSER} failed:\n{r.stdout}\n{r.stderr}"
    script = NPM_PREFIX / "validate-asyncapi.js"  # beside node_modules, so require() finds it
    script.write_text(VALIDATE_JS)
    workdir = tmp_path_factory.mktemp("asyncapi")

    def parse(doc: Any) -> Any:
        path = workdir / "doc.json"
        path.write_bytes(dumps(doc))
        r = subprocess.run([node, str(script), str(path)], capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        return msgspec.json.decode(r.stdout)

    return parse


ERROR, WARNING = 0, 1  # the parser's DiagnosticSeverity; 2 and 3 are information and hints


def test_the_document_is_valid_asyncapi_3(parse_asyncapi: Callable[[Any], Any]) -> None:
    result = parse_asyncapi(asyncapi())
    problems = [d for d in result["diagnostics"] if d["severity"] in (ERROR, WARNING)]
    assert result["parsed"] and not problems, problems


def test_the_parser_does_reject_a_broken_document(parse_asyncapi: Callable[[Any], Any]) -> None:
    doc = asyncapi()
    op = next(iter(doc["operations"].values()))
    op["channel"] = {"$ref": "#/channels/no_such_channel"}
    result = parse_asyncapi(doc)
    assert not result["parsed"] or any(d["severity"] == ERROR for d in result["diagnostics"])


def test_the_document_covers_every_subject_stream_and_message() -> None:
    doc = asyncapi(Subjects(prefix="acme"))
    channels = doc["channels"]
    assert {c["address"] for c in channels.values()} >= {
        "acme.billing.evt.invoice.issued.v1", "acme.billing.cmd.erp.journal.v1",
        "acme.usage.evt.usage.recorded.v1", "acme.dlq.{lane}.{code}",
        "acme.dlq.resolved.{action}.{seq}", "acme.mon.metrics", "acme.mon.events.{kind}"}
    streams = {c.get("x-stream") for c in channels.values()}
    assert {f"ACME_{lane.upper()}" for lane in LANES} | {"ACME_DLQ"} <= streams
    for op in doc["operations"].values():
        cid = op["channel"]["$ref"].rsplit("/", 1)[1]
        assert cid in channels
        for ref in op["messages"]:
            assert ref["$ref"].startswith(f"#/channels/{cid}/messages/")
    assert doc["components"]["messages"]["InvoiceIssued"]["name"] == "invoice.issued.v1"
