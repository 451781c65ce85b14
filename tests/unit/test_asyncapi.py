"""asyncapi.yaml: generated from schemas/ and the topic table, and committed up to date."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipeline import asyncapi, events, schema_registry, topics
from pipeline.schemas_cli import schemas_app


def _doc() -> dict[str, object]:
    text = asyncapi.asyncapi_path().read_text()
    body = text.split("\n", 1)[1] if text.startswith("#") else text
    loaded: dict[str, object] = json.loads(body)
    return loaded


def test_committed_asyncapi_equals_a_fresh_generation() -> None:
    """The committed asyncapi.yaml is byte for byte what the generator writes now."""
    assert asyncapi.asyncapi_path().read_text() == asyncapi.render()


def test_check_option_passes_when_up_to_date() -> None:
    """`tipline schemas asyncapi --check` exits 0 on the committed file."""
    result = CliRunner().invoke(schemas_app, ["asyncapi", "--check"])
    assert result.exit_code == 0, result.output


def test_every_topic_is_a_channel_with_its_messages() -> None:
    """Each topic, lanes and dead letters included, is a channel whose address is the topic name."""
    doc = _doc()
    channels = doc["channels"]
    assert isinstance(channels, dict)
    addresses = {c["address"]: c for c in channels.values()}
    assert set(addresses) == {spec.name for spec in topics.ALL_TOPICS}
    for spec in topics.ALL_TOPICS:
        expected = set(spec.events) or {"DeadLetter"}
        assert set(addresses[spec.name]["messages"]) == expected
        assert addresses[spec.name]["bindings"]["kafka"]["topic"] == spec.name


def test_messages_carry_the_current_avro_schema_and_key() -> None:
    """Each event message has the current .avsc as payload, the Avro schema format and a report-id key."""
    doc = _doc()
    messages = doc["components"]["messages"]  # type: ignore[index]
    for name, version in events.SCHEMA_VERSIONS.items():
        message = messages[name]
        current = json.loads(schema_registry.schema_path(name, version).read_text())
        assert message["payload"]["schemaFormat"] == asyncapi.AVRO_SCHEMA_FORMAT
        assert message["payload"]["schema"] == current
        assert message["bindings"]["kafka"]["key"]["type"] == "string"


def test_document_is_asyncapi_3() -> None:
    """The document declares AsyncAPI 3.0.0 and every operation points at a defined channel."""
    doc = _doc()
    assert doc["asyncapi"] == "3.0.0"
    channels = doc["channels"]
    operations = doc["operations"]
    assert isinstance(channels, dict)
    assert isinstance(operations, dict)
    for op in operations.values():
        ref = op["channel"]["$ref"]
        assert ref.removeprefix("#/channels/") in channels
