"""confluent-kafka's SchemaRegistryClient, AvroSerializer and AvroDeserializer (from PyPI),
unchanged, against `sluice registry`. The Rust test `tests/python_client.rs` starts the
registry and runs this file with SLUICE_TEST_REGISTRY_URL set."""

import json
import os
import pathlib
import uuid

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

HERE = pathlib.Path(__file__).resolve().parent
SCHEMAS = HERE.parent.parent
V1 = (SCHEMAS / "telemetry-v1.avsc").read_text()
V2 = (SCHEMAS / "telemetry-v2.avsc").read_text()


@pytest.fixture
def client():
    url = os.environ.get("SLUICE_TEST_REGISTRY_URL")
    assert url, "SLUICE_TEST_REGISTRY_URL is not set: run through `cargo test -p sluice-schemas --test python_client`"
    return SchemaRegistryClient({"url": url})


@pytest.fixture
def topic():
    return f"py-telemetry-{uuid.uuid4().hex[:8]}"


def test_register_get_and_lookup(client, topic):
    subject = f"{topic}-value"
    id1 = client.register_schema(subject, Schema(V1, "AVRO"))
    assert client.register_schema(subject, Schema(V1, "AVRO")) == id1
    fetched = client.get_schema(id1)
    assert json.loads(fetched.schema_str) == json.loads(V1)
    id2 = client.register_schema(subject, Schema(V2, "AVRO"))
    assert id2 != id1
    latest = client.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (id2, 2)
    assert client.get_versions(subject) == [1, 2]
    assert subject in client.get_subjects()
    found = client.lookup_schema(subject, Schema(V1, "AVRO"))
    assert (found.schema_id, found.version) == (id1, 1)
    assert client.get_version(subject, 1).schema_id == id1


def test_compatibility_and_config(client, topic):
    subject = f"{topic}-value"
    client.register_schema(subject, Schema(V2, "AVRO"))
    assert client.test_compatibility(subject, Schema(V2, "AVRO")) is True
    # v1 cannot read v2 data: BACKWARD rejects it.
    assert client.test_compatibility(subject, Schema(V1, "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(subject, Schema(V1, "AVRO"))
    assert e.value.error_code == 409
    assert client.set_compatibility(subject_name=subject, level="FORWARD")["compatibility"] == "FORWARD"
    assert client.get_compatibility(subject) == "FORWARD"
    assert client.test_compatibility(subject, Schema(V1, "AVRO")) is True


def test_errors_have_confluent_codes(client, topic):
    with pytest.raises(SchemaRegistryError) as e:
        client.get_latest_version(f"{topic}-missing")
    assert e.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as e:
        client.get_schema(987654)
    assert e.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as e:
        client.register_schema(f"{topic}-value", Schema('{"type": "record"}', "AVRO"))
    assert e.value.error_code == 42201
    subject = f"{topic}-value"
    client.register_schema(subject, Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as e:
        client.get_version(subject, 9)
    assert e.value.error_code == 40402


def test_delete(client, topic):
    subject = f"{topic}-value"
    client.register_schema(subject, Schema(V1, "AVRO"))
    assert client.delete_subject(subject) == [1]
    assert client.delete_subject(subject, permanent=True) == [1]
    assert subject not in client.get_subjects()


def test_serializer_v1_to_deserializer_v2(client, topic):
    v1_ser = AvroSerializer(client, V1)
    ctx = SerializationContext(topic, MessageField.VALUE)
    record = {
        "device_id": "dev-py",
        "metric": "temperature",
        "ts": 1700000000123,
        "value": 21.5,
        "seq": 5,
        "firmware": "3.1",
    }
    data = v1_ser(record, ctx)
    assert data[0] == 0
    # A reader on v2: resolution renames ts, promotes value and fills quality.
    v2_de = AvroDeserializer(client, V2)
    got = v2_de(data, ctx)
    assert got["device_id"] == "dev-py"
    assert got["value"] == 21.5
    assert got["seq"] == 5
    assert got["quality"] == 100
    ts = got["event_time"]
    assert getattr(ts, "timestamp", lambda: ts / 1000)() * 1000 == pytest.approx(1700000000123)
    # And the writer's own schema round-trips.
    plain = AvroDeserializer(client)(data, ctx)
    assert plain["firmware"] == "3.1"
