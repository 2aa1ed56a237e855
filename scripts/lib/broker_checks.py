#!/usr/bin/env python3
"""Probe a Kafka-API broker for the features sluice relies on; print one verdict per check.

    python3 scripts/lib/broker_checks.py [BOOTSTRAP]        (default: $SLUICE_BROKERS)

Each check uses its own random topic and group. Verdicts: OK (behaves like Kafka), GAP (differs,
with what was seen), ERROR (the check itself failed). docs/BROKER_GAPS.md records the results for
Tansu 0.6.0. Checks that need a broker restart live in scripts/lib/broker_durability.sh.
"""

import os
import sys
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

BOOT = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SLUICE_BROKERS", "127.0.0.1:19092")
ADMIN = AdminClient({"bootstrap.servers": BOOT})
RESULTS = []


def name(prefix):
    return f"check-{prefix}-{uuid.uuid4().hex[:8]}"


def verdict(check, ok, detail):
    RESULTS.append((check, "OK" if ok else "GAP", detail))
    print(f"{'OK ' if ok else 'GAP'}  {check}: {detail}", flush=True)


def create(topic, partitions=1, config=None):
    fs = ADMIN.create_topics([NewTopic(topic, partitions, 1, config=config or {})])
    fs[topic].result(timeout=15)


def consume_all(topic, group=None, isolation="read_uncommitted", expect=None, tries=400):
    c = Consumer({
        "bootstrap.servers": BOOT,
        "group.id": group or name("reader"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
    out, empty = [], 0
    for _ in range(tries):
        batch = c.consume(500, 0.5)
        if not batch:
            empty += 1
            if (expect is None or len(out) >= expect) and empty >= 4:
                break
            continue
        empty = 0
        for m in batch:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append(m)
    c.close()
    return out


def flush(p):
    left = p.flush(15)
    if left:
        raise RuntimeError(f"{left} messages not delivered")


def check(fn):
    try:
        fn()
    except Exception as e:  # a failing check is a finding, not a crash of the whole run
        RESULTS.append((fn.__name__, "ERROR", repr(e)))
        print(f"ERR  {fn.__name__}: {e!r}", flush=True)


def create_topics_configs():
    t = name("cfg")
    create(t, 2, {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"})
    res = ConfigResource(ConfigResource.Type.TOPIC, t)
    entries = ADMIN.describe_configs([res])[res].result(timeout=10)
    got = {k: v.value for k, v in entries.items()}
    kept = got.get("cleanup.policy") == "compact" and got.get("min.compaction.lag.ms") == "3600000"
    verdict("CreateTopics configs stored", kept, f"DescribeConfigs returned {got}")
    defaults = [k for k in ("retention.ms", "segment.bytes", "message.timestamp.type") if k in got]
    verdict("DescribeConfigs returns defaults", bool(defaults),
            f"{len(got)} entries; unset defaults present: {defaults or 'none'}")
    sources = {k: str(v.source) for k, v in entries.items()}
    set_explicitly = all("DYNAMIC_TOPIC_CONFIG" in s for s in sources.values())
    verdict("DescribeConfigs config source", set_explicitly, f"sources {sources}")
    try:
        b = ConfigResource(ConfigResource.Type.BROKER, "0")
        bgot = ADMIN.describe_configs([b])[b].result(timeout=10)
        verdict("DescribeConfigs BROKER resource", len(bgot) > 0, f"{len(bgot)} broker configs")
    except Exception as e:
        verdict("DescribeConfigs BROKER resource", False, f"error {e}")


def idempotent_producer():
    t = name("idem")
    create(t, 1)
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "linger.ms": 5})
    errors = []
    for i in range(2000):
        p.produce(t, key=b"k", value=str(i).encode(),
                  on_delivery=lambda e, m: e and errors.append(e))
        if i % 500 == 0:
            p.poll(0)
    flush(p)
    got = consume_all(t, expect=2000)
    values = [int(m.value()) for m in got]
    ok = not errors and values == list(range(2000))
    verdict("idempotent producer (2000 records, in order, no dupes)", ok,
            f"errors={errors[:3]} consumed={len(values)} in_order={values == sorted(values)}")


def transactions():
    t = name("txn")
    create(t, 1)
    src = name("txsrc")
    create(src, 1)
    group = name("txgroup")
    tid = name("tid")
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": tid})
    p.init_transactions(15)
    p.begin_transaction()
    for i in range(10):
        p.produce(t, key=b"k", value=f"committed-{i}".encode())
    # Offsets committed inside the transaction, as a consume-process-produce loop does.
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False})
    p.send_offsets_to_transaction([TopicPartition(src, 0, 42)], c.consumer_group_metadata(), 15)
    p.commit_transaction(15)
    p.begin_transaction()
    for i in range(10):
        p.produce(t, key=b"k", value=f"aborted-{i}".encode())
    flush(p)
    p.abort_transaction(15)
    committed = [m.value().decode() for m in consume_all(t, isolation="read_committed", expect=10)]
    uncommitted = [m.value().decode() for m in consume_all(t, isolation="read_uncommitted", expect=20)]
    verdict("transactions: read_committed hides aborted records",
            len(committed) == 10 and all(v.startswith("committed") for v in committed),
            f"read_committed saw {len(committed)} ({sum(v.startswith('aborted') for v in committed)} aborted), "
            f"read_uncommitted saw {len(uncommitted)}")
    got = c.committed([TopicPartition(src, 0)], timeout=10)
    verdict("transactions: send_offsets_to_transaction commits group offset",
            got[0].offset == 42, f"committed offset {got[0].offset}")
    c.close()
    # A second producer with the same transactional.id must fence the first (zombie fencing).
    p2 = Producer({"bootstrap.servers": BOOT, "transactional.id": tid})
    p2.init_transactions(15)
    fenced = False
    try:
        p.begin_transaction()
        p.produce(t, value=b"zombie")
        p.commit_transaction(10)
    except KafkaException as e:
        fenced = e.args[0].code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                      KafkaError.INVALID_PRODUCER_EPOCH) or "fenc" in str(e).lower()
        detail = f"old producer got {e.args[0].name()}"
    else:
        detail = "old producer committed after a new one initialised the same transactional.id"
    verdict("transactions: zombie producer is fenced", fenced, detail)


def offset_commit_metadata():
    t = name("meta")
    create(t, 1)
    group = name("metagroup")
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(t, 0, 7, metadata="sluice-marker-123")], asynchronous=False)
    got = c.committed([TopicPartition(t, 0)], timeout=10)[0]
    c.close()
    verdict("offset commit metadata round-trips", got.metadata == "sluice-marker-123",
            f"offset={got.offset} metadata={got.metadata!r}")


def log_append_time():
    t = name("lat")
    create(t, 1, {"message.timestamp.type": "LogAppendTime"})
    p = Producer({"bootstrap.servers": BOOT})
    p.produce(t, value=b"x", timestamp=1_000_000)  # a 1970 CreateTime the broker must replace
    flush(p)
    m = consume_all(t, expect=1)[0]
    ts_type, ts = m.timestamp()
    verdict("message.timestamp.type=LogAppendTime", ts_type == 2 and ts > 1_000_000,
            f"timestamp type {ts_type} (1=CreateTime, 2=LogAppendTime), value {ts}")


def wait_assignment(consumers, tries=60):
    for _ in range(tries):
        for c in consumers:
            c.poll(0.25)
        if all(c.assignment() for c in consumers):
            return True
    return False


def static_membership():
    t = name("static")
    create(t, 4)
    group = name("staticgroup")
    events = []

    def conf(inst):
        return {"bootstrap.servers": BOOT, "group.id": group, "group.instance.id": inst,
                "session.timeout.ms": 30000, "enable.auto.commit": False}

    def cb(tag):
        return {"on_assign": lambda c, ps: events.append((tag, "assign", len(ps))),
                "on_revoke": lambda c, ps: events.append((tag, "revoke", len(ps)))}

    a = Consumer(conf("inst-a"))
    b = Consumer(conf("inst-b"))
    a.subscribe([t], **cb("a"))
    b.subscribe([t], **cb("b"))
    stable = wait_assignment([a, b])
    before = sorted(p.partition for p in a.assignment())
    mid_a = a.memberid()
    a.close()  # a static member's close sends no LeaveGroup: its partitions wait for it
    events.clear()
    a2 = Consumer(conf("inst-a"))
    a2.subscribe([t], **cb("a2"))
    back = wait_assignment([a2, b])
    for _ in range(8):
        b.poll(0.25)
    after = sorted(p.partition for p in a2.assignment())
    b_moved = [e for e in events if e[0] == "b"]
    ok = stable and back and before == after and not b_moved
    verdict("static membership (group.instance.id) rejoin without rebalance", ok,
            f"a had {before} (member {mid_a}), restarted a got {after}; b callbacks during rejoin {b_moved}")
    a2.close()
    b.close()


def static_member_fencing():
    t = name("fence")
    create(t, 2)
    group = name("fencegroup")
    conf = {"bootstrap.servers": BOOT, "group.id": group, "group.instance.id": "same",
            "session.timeout.ms": 30000, "enable.auto.commit": False}
    errors = []
    a = Consumer({**conf, "error_cb": lambda e: errors.append(("a", e))})
    a.subscribe([t])
    wait_assignment([a])
    b = Consumer({**conf, "error_cb": lambda e: errors.append(("b", e))})
    b.subscribe([t])
    for _ in range(40):
        for c in (a, b):
            try:
                c.poll(0.25)
            except KafkaException as e:
                errors.append(("poll", e))
    both = bool(a.assignment()) and bool(b.assignment())
    fenced = any("FENCED" in str(e).upper() for _, e in errors)
    verdict("static membership: duplicate group.instance.id is fenced", fenced and not both,
            f"both consumers own partitions: {both}; fencing errors: {fenced}")
    for c in (a, b):
        try:
            c.close()
        except KafkaException:
            pass


def cooperative_sticky():
    t = name("coop")
    create(t, 4)
    group = name("coopgroup")
    events = []

    def conf():
        return {"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False,
                "partition.assignment.strategy": "cooperative-sticky"}

    a = Consumer(conf())
    a.subscribe([t], on_assign=lambda c, ps: (events.append(("a", "assign", len(ps))), c.incremental_assign(ps)),
                on_revoke=lambda c, ps: (events.append(("a", "revoke", len(ps))), c.incremental_unassign(ps)))
    ok1 = wait_assignment([a])
    b = Consumer(conf())
    b.subscribe([t])
    ok2 = False
    for _ in range(80):
        a.poll(0.25)
        b.poll(0.25)
        if len(a.assignment()) == 2 and len(b.assignment()) == 2:
            ok2 = True
            break
    revokes = [e for e in events if e[1] == "revoke"]
    incremental = all(n <= 2 for _, _, n in revokes)
    verdict("cooperative-sticky: incremental rebalance to 2+2", ok1 and ok2 and incremental,
            f"a={len(a.assignment())} b={len(b.assignment())}, a's revokes {revokes}")
    a.close()
    b.close()


def auto_create_topics():
    t = name("auto")
    p = Producer({"bootstrap.servers": BOOT, "message.timeout.ms": 5000})
    errs = []
    p.produce(t, value=b"x", on_delivery=lambda e, m: e and errs.append(e))
    p.flush(8)
    exists = t in ADMIN.list_topics(timeout=5).topics
    verdict("no auto-creation of topics on produce (sluice creates its own)", not exists,
            f"topic {'was' if exists else 'was not'} auto-created; delivery errors {errs[:1]}")


if __name__ == "__main__":
    print(f"broker checks against {BOOT}", flush=True)
    for fn in (create_topics_configs, idempotent_producer, transactions, offset_commit_metadata,
               log_append_time, static_membership, static_member_fencing, cooperative_sticky, auto_create_topics):
        check(fn)
    gaps = sum(1 for r in RESULTS if r[1] != "OK")
    print(f"broker checks: {len(RESULTS) - gaps} ok, {gaps} gaps or errors")
