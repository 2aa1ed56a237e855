#!/usr/bin/env python3
"""Does the local durable broker keep topics, records and committed group offsets across a
restart? And does it compact before min.compaction.lag.ms? Restarts it with scripts/stack.

    python3 scripts/lib/broker_durability.py        (needs `scripts/stack up` first)

Exits non-zero when anything sluice relies on did not survive the restart.
"""

import os
import subprocess
import sys
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOOT = os.environ.get("SLUICE_BROKERS", "127.0.0.1:19092")


def tag(p):
    return f"durable-{p}-{uuid.uuid4().hex[:8]}"


def read_all(topic, partitions, expect, group=None, assign=True):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group or tag("reader"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    if assign:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    else:
        c.subscribe([topic])
    out, idle = [], 0
    for _ in range(120):
        m = c.poll(0.5)
        if m is None:
            idle += 1
            if len(out) >= expect and idle >= 4:
                break
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(m.error())
            continue
        idle = 0
        out.append(m)
    return c, out


def main():
    admin = AdminClient({"bootstrap.servers": BOOT})
    topic, compacted, group = tag("records"), tag("compacted"), tag("group")
    for f in admin.create_topics([
        NewTopic(topic, 2, 1),
        NewTopic(compacted, 1, 1, config={"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}),
    ]).values():
        f.result(timeout=15)
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True})
    for i in range(100):
        p.produce(topic, key=f"dev-{i % 10}".encode(), value=str(i).encode())
    for v in (b"v1", b"v2", b"v3"):
        p.produce(compacted, key=b"k1", value=v)
    p.produce(compacted, key=b"k2", value=b"only")
    assert p.flush(15) == 0, "records not delivered"

    c, got = read_all(topic, 2, 100, group=group, assign=False)
    assert len(got) == 100, f"read {len(got)} of 100 before the restart"
    c.commit(asynchronous=False)
    before = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], 10)}
    c.close()
    print(f"before restart: 100 records, group {group} committed {before}", flush=True)

    subprocess.run([os.path.join(ROOT, "scripts", "stack"), "restart-broker"], check=True)

    failures = []
    md = admin.list_topics(timeout=15).topics
    if topic not in md or len(md[topic].partitions) != 2:
        failures.append(f"topic {topic} lost or changed: {md.get(topic)}")
    c, again = read_all(topic, 2, 100)
    c.close()
    if sorted(int(m.value()) for m in again) != list(range(100)):
        failures.append(f"records after restart: {len(again)} of 100")
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False})
    after = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], 10)}
    c.close()
    if after != before:
        failures.append(f"committed offsets changed: before {before}, after {after}")
    # The group resumes where it committed: only records produced after the restart arrive.
    p = Producer({"bootstrap.servers": BOOT})
    for i in range(100, 105):
        p.produce(topic, key=b"dev-new", value=str(i).encode())
    p.flush(15)
    c, resumed = read_all(topic, 2, 5, group=group, assign=False)
    c.close()
    if sorted(int(m.value()) for m in resumed) != list(range(100, 105)):
        failures.append(f"group resumed with {[int(m.value()) for m in resumed][:10]} instead of 100..104")
    print(f"after restart: records {len(again)}, committed {after}, resumed {len(resumed)} new", flush=True)

    c, comp = read_all(compacted, 1, 2)
    c.close()
    values = [(m.key().decode(), m.value().decode()) for m in comp]
    lag_honoured = len(values) == 4
    print(f"compacted topic after restart (min.compaction.lag.ms=3600000, records 0-1 s old): {values}")
    print("min.compaction.lag.ms " + ("honoured (or no compaction ran)" if lag_honoured else
                                       "IGNORED: compaction removed records younger than the lag"))
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        sys.exit(1)
    print("durability: topics, records and committed offsets survived the broker restart")


if __name__ == "__main__":
    main()
