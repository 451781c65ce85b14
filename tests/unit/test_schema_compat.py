"""schemas/: in step with the dataclasses, self-contained, and every old version readable as current."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import typing
from pathlib import Path
from typing import Any

import fastavro
import pytest
from typer.testing import CliRunner

from pipeline import events as ev
from pipeline import schema_registry, serde
from pipeline.errors import TiplineError
from pipeline.schemas_cli import schemas_app

FILES = schema_registry.registry()


def _record_fields(schema: Any, named: dict[str, Any]) -> dict[str, list[str]]:
    """Field names of every record in a schema, by record name (references resolved)."""
    out: dict[str, list[str]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                visit(n)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum"):
                named[node["name"]] = node
            if node.get("type") == "record":
                out[node["name"]] = [f["name"] for f in node["fields"]]
                for f in node["fields"]:
                    visit(f["type"])
            elif node.get("type") == "array":
                visit(node["items"])

    visit(schema)
    return out


def _dataclass_fields(cls: type) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}

    def visit(hint: Any) -> None:
        for arg in typing.get_args(hint) or (hint,):
            if arg is Ellipsis:
                continue
            if typing.get_args(arg):
                visit(arg)
            elif dataclasses.is_dataclass(arg) and arg.__name__ not in out:
                out[arg.__name__] = [f.name for f in dataclasses.fields(arg)]
                for name, sub in typing.get_type_hints(arg).items():
                    if name != "STAGE":
                        visit(sub)

    visit(cls)
    return out


@pytest.mark.parametrize("cls", list(ev.EVENT_TYPES.values()), ids=lambda c: c.__name__)
def test_dataclass_fields_match_schema_fields_exactly(cls: type) -> None:
    """Every record in the current .avsc has exactly the fields, in order, of its dataclass."""
    version = ev.SCHEMA_VERSIONS[cls.__name__]
    raw = json.loads(schema_registry.schema_path(cls.__name__, version).read_text())
    assert _record_fields(raw, {}) == _dataclass_fields(cls)


def test_committed_schemas_equal_a_fresh_generation() -> None:
    """Regenerating the current schema of every event from the dataclasses changes no file."""
    assert schema_registry.write_current(check=True) == []


@pytest.mark.parametrize("schema_file", FILES, ids=lambda f: f.path.name)
def test_each_schema_file_loads_on_its_own(schema_file: schema_registry.SchemaFile) -> None:
    """Each .avsc parses alone (shared records inline), with the namespace of its stage."""
    parsed = fastavro.parse_schema(json.loads(schema_file.path.read_text()), named_schemas={})
    assert parsed["name"] == f"ca.tipline.{schema_file.path.parent.name}.{schema_file.event_name}"


def test_limits_are_documented_in_the_schema() -> None:
    """The description limit that Avro cannot express is stated in the field's doc."""
    raw = json.loads(schema_registry.schema_path("ReportSubmitted", 1).read_text())
    description = next(f for f in raw["fields"] if f["name"] == "description")
    assert "20,000" in description["doc"]


def test_v1_bytes_read_as_the_current_version() -> None:
    """A ReportClosed written with v1 decodes as the current class, the v2 field taking its default."""
    v1 = next(f for f in FILES if f.event_name == "ReportClosed" and f.version == 1)
    assert ev.SCHEMA_VERSIONS["ReportClosed"] > 1
    record = schema_registry.sample_datum(v1.raw, fill=True)
    record["envelope"]["event_type"] = "ReportClosed"
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + v1.fingerprint)
    fastavro.schemaless_writer(buf, v1.parsed, record)
    event = serde.decode(buf.getvalue())
    assert isinstance(event, ev.ReportClosed)
    assert event.tags == ()
    assert event.closed_reason == "sample"
    assert serde.event_type_of(buf.getvalue()) == "ReportClosed"


_REPORTER_LOCATION_V2 = ["ReportReceived", "ReportPrioritized", "ReportClassified", "ReportAssessed"]


def _v1_bytes(event_name: str) -> bytes:
    v1 = next(f for f in FILES if f.event_name == event_name and f.version == 1)
    record = schema_registry.sample_datum(v1.raw, fill=True)
    record["envelope"]["event_type"] = event_name
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + v1.fingerprint)
    fastavro.schemaless_writer(buf, v1.parsed, record)
    return buf.getvalue()


@pytest.mark.parametrize("event_name", _REPORTER_LOCATION_V2)
def test_v1_report_body_reads_as_v2_without_reporter_location(event_name: str) -> None:
    """An event written with v1 (before ReportBody.reporter_location) decodes as v2 with it None."""
    assert ev.SCHEMA_VERSIONS[event_name] == 2
    event = serde.decode(_v1_bytes(event_name))
    assert type(event).__name__ == event_name
    body = event.body  # type: ignore[union-attr]
    assert body.reporter_location is None
    assert body.description == "sample"
    assert body.reporters_count == 7  # the sample long, written by v1


def test_v1_report_submitted_reads_as_v2_without_reporter_location() -> None:
    """A ReportSubmitted written with v1 decodes as v2 with reporter_location None."""
    assert ev.SCHEMA_VERSIONS["ReportSubmitted"] == 2
    event = serde.decode(_v1_bytes("ReportSubmitted"))
    assert isinstance(event, ev.ReportSubmitted)
    assert event.reporter_location is None
    assert event.description == "sample"


def test_v2_reporter_location_round_trips() -> None:
    """A ReportReceived v2 carrying a reporter location encodes and decodes to an equal event."""
    v1_event = serde.decode(_v1_bytes("ReportReceived"))
    assert isinstance(v1_event, ev.ReportReceived)
    where = ev.Location(province="ON", country="CA", city="Ottawa")
    event = dataclasses.replace(v1_event, body=dataclasses.replace(v1_event.body, reporter_location=where))
    decoded = serde.decode(serde.encode(event))
    assert isinstance(decoded, ev.ReportReceived)
    assert decoded.body.reporter_location == where
    assert decoded == event


def test_every_version_is_kept_and_compatible() -> None:
    """No current schema fails to read an older version of its event."""
    assert schema_registry.compatibility_problems() == []
    assert {(f.event_name, f.version) for f in FILES} >= {(n, v) for n, v in ev.SCHEMA_VERSIONS.items()}


def _copy_schemas(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schema_registry.schemas_dir(), root)
    return root


def test_incompatible_change_is_reported(tmp_path: Path) -> None:
    """A new version adding a field without a default is reported in one sentence naming the event."""
    root = _copy_schemas(tmp_path)
    current = ev.SCHEMA_VERSIONS["ReportClosed"]
    raw = json.loads(schema_registry.schema_path("ReportClosed", current, root).read_text())
    raw["fields"].append({"name": "mandatory_new", "type": "string"})
    bad = schema_registry.schema_path("ReportClosed", current + 1, root)
    bad.write_text(json.dumps(raw))
    problems = schema_registry.compatibility_problems(schema_registry.load_all(root))
    assert any("ReportClosed v" in p and "cannot read data written with" in p for p in problems)


def test_retyped_field_is_reported(tmp_path: Path) -> None:
    """A new version changing a field's type (string to long) is reported."""
    root = _copy_schemas(tmp_path)
    raw = json.loads(schema_registry.schema_path("ReportRejected", 1, root).read_text())
    for f in raw["fields"]:
        if f["name"] == "reason_code":
            f["type"] = "long"
    schema_registry.schema_path("ReportRejected", 2, root).write_text(json.dumps(raw))
    problems = schema_registry.compatibility_problems(schema_registry.load_all(root))
    assert any(p.startswith("ReportRejected v2 cannot read data written with v1") for p in problems)


def test_misnamed_schema_file_is_an_error(tmp_path: Path) -> None:
    """A file in schemas/ that does not follow <Event>.v<N>.avsc is refused, not ignored."""
    root = _copy_schemas(tmp_path)
    (root / "route" / "ReportClosed.avsc").write_text("{}")
    with pytest.raises(TiplineError):
        schema_registry.load_all(root)


def test_schemas_check_command_passes_on_the_repository() -> None:
    """`tipline schemas check` exits 0 on the committed schemas."""
    result = CliRunner().invoke(schemas_app, ["check"])
    assert result.exit_code == 0, result.output
    assert "every current schema reads every older version" in result.output


def test_schemas_check_command_fails_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`tipline schemas check` fails with a TiplineError sentence when a version is incompatible."""
    root = _copy_schemas(tmp_path)
    raw = json.loads(schema_registry.schema_path("ReportRejected", 1, root).read_text())
    raw["fields"].append({"name": "mandatory_new", "type": "string"})
    schema_registry.schema_path("ReportRejected", 2, root).write_text(json.dumps(raw))
    monkeypatch.setattr(schema_registry, "schemas_dir", lambda: root)
    monkeypatch.setitem(ev.SCHEMA_VERSIONS, "ReportRejected", 2)
    result = CliRunner().invoke(schemas_app, ["check"])
    assert result.exit_code != 0
    assert isinstance(result.exception, TiplineError)
    assert "ReportRejected" in str(result.exception)
