#!/usr/bin/env python3
"""Does the local durable broker keep topics, records, high watermarks and committed group
offsets across a restart? And does it compact before min.compaction.lag.ms, and what happens to
tombstones? Restarts the broker with `scripts/stack restart-broker`.

    python3 scripts/lib/broker_durability.py        (needs `scripts/stack up` first)

Meant for any Kafka-API broker the stack runs (Nisshi, Tansu); the report names none.
Exits non-zero when anything sluice relies on did not survive the restart. The compaction lines
are findings, not failures: on Kafka the compacted topic keeps all 6 records (the lag is an hour).
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


def watermarks(topic, partitions):
    """(low, high) per partition, asked of the broker (ListOffsets), not from a cache."""
    c = Consumer({"bootstrap.servers": BOOT, "group.id": tag("wm"), "enable.auto.commit": False})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                for p in range(partitions)}
    finally:
        c.close()


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
    p.produce(compacted, key=b"k3", value=b"doomed")
    p.produce(compacted, key=b"k3", value=None)  # a tombstone
    assert p.flush(15) == 0, "records not delivered"

    c, got = read_all(topic, 2, 100, group=group, assign=False)
    assert len(got) == 100, f"read {len(got)} of 100 before the restart"
    c.commit(asynchronous=False)
    before = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], 10)}
    c.close()
    wm_before = watermarks(topic, 2)
    print(f"before restart: 100 records, group {group} committed {before}, watermarks {wm_before}",
          flush=True)

    subprocess.run([os.path.join(ROOT, "scripts", "stack"), "restart-broker"], check=True)

    failures = []
    md = admin.list_topics(timeout=15).topics
    if topic not in md or len(md[topic].partitions) != 2:
        failures.append(f"topic {topic} lost or changed: {md.get(topic)}")
    c, again = read_all(topic, 2, 100)
    c.close()
    if sorted(int(m.value()) for m in again) != list(range(100)):
        failures.append(f"records after restart: {len(again)} of 100")
    wm_after = watermarks(topic, 2)
    if wm_after != wm_before:
        failures.append(f"watermarks changed: before {wm_before}, after {wm_after}")
    read_per_partition = {p: sum(1 for m in again if m.partition() == p) for p in range(2)}
    if any(wm_after[p][1] - wm_after[p][0] != n for p, n in read_per_partition.items()):
        failures.append(f"watermarks {wm_after} disagree with the records read per partition "
                        f"{read_per_partition}")
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
    print(f"after restart: records {len(again)}, watermarks {wm_after}, committed {after}, "
          f"resumed {len(resumed)} new", flush=True)

    c, comp = read_all(compacted, 1, 3)
    c.close()
    values = [(m.key().decode(), None if m.value() is None else m.value().decode()) for m in comp]
    lag_honoured = len(values) == 6
    print(f"compacted topic after restart (min.compaction.lag.ms=3600000, records seconds old, "
          f"6 written): {values}")
    print("min.compaction.lag.ms " + ("honoured (or no compaction ran)" if lag_honoured else
                                       "IGNORED: compaction removed records younger than the lag"))
    print("tombstone for k3 " + ("kept" if ("k3", None) in values else "removed") +
          "; k3's earlier value " + ("kept" if ("k3", "doomed") in values else "removed"))
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        sys.exit(1)
    print("durability: topics, records, watermarks and committed offsets survived the broker restart")


if __name__ == "__main__":
    main()
