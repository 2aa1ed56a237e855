#!/usr/bin/env python3
"""Probe a Kafka-API broker for the features sluice relies on; print one verdict per check.

    python3 scripts/lib/broker_checks.py [BOOTSTRAP] [--load N] [--load-batch N]
                                         [--only CHECK,...] [--compaction-wait SECONDS]

BOOTSTRAP defaults to $SLUICE_BROKERS. Each check uses its own random topic and group, and the
report names no broker: it is meant to run unchanged against any Kafka-API broker (Nisshi,
Tansu, Redpanda, Kafka). Verdicts: OK (behaves like Kafka), GAP (differs, with what was seen),
ERR (the check itself failed). docs/BROKER_GAPS.md records the results per broker. Checks that need a broker restart live in
scripts/lib/broker_durability.py.

--load N        records for the idempotent load check (default 200000; 0 skips it)
--load-batch N  its producer's batch.num.messages (default 10000, librdkafka's); a small value
                such as 50 keeps many more produce requests in flight
--compaction-wait SECONDS
                also watch a compacted topic (min.compaction.lag.ms one hour) for that long and
                report whether and when the broker compacted it (default 0: skipped)
"""

import argparse
import json
import os
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
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("bootstrap", nargs="?", default=os.environ.get("SLUICE_BROKERS", "127.0.0.1:19092"))
ARGS.add_argument("--load", type=int, default=200_000)
ARGS.add_argument("--load-batch", type=int, default=10_000,
                  help="batch.num.messages for the load check (smaller: more requests in flight)")
ARGS.add_argument("--only", default="", help="comma-separated check names")
ARGS.add_argument("--compaction-wait", type=float, default=0.0)
OPTS = ARGS.parse_args()
BOOT = OPTS.bootstrap
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


def source_name(source):
    try:
        return ConfigSource(source).name
    except ValueError:
        return str(source)


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
    # Only the two configs set at creation should say DYNAMIC_TOPIC_CONFIG.
    sources = {k: source_name(v.source) for k, v in entries.items()}
    set_explicitly = all(sources.get(k) == "DYNAMIC_TOPIC_CONFIG"
                         for k in ("cleanup.policy", "min.compaction.lag.ms"))
    verdict("DescribeConfigs config source of explicitly set configs", set_explicitly,
            f"sources {sources}")
    node = next(iter(ADMIN.list_topics(timeout=10).brokers))
    try:
        b = ConfigResource(ConfigResource.Type.BROKER, str(node))
        bgot = ADMIN.describe_configs([b])[b].result(timeout=10)
        verdict("DescribeConfigs BROKER resource", len(bgot) > 0,
                f"broker {node}: {len(bgot)} broker configs")
    except Exception as e:
        verdict("DescribeConfigs BROKER resource", False, f"broker {node}: error {e}")


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


def read_until_quiet(topic, partitions, quiet_polls=8):
    """Every record of `topic`, read from the beginning until `quiet_polls` polls in a row
    (0.5 s each) bring nothing. Deliberately not bounded by the high watermark: the watermark
    is one of the things under test."""
    c = Consumer({"bootstrap.servers": BOOT, "group.id": name("reader"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, idle = [], 0
    while idle < quiet_polls:
        batch = c.consume(10000, 0.5)
        if not batch:
            idle += 1
            continue
        idle = 0
        for m in batch:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append((m.partition(), m.offset(), int(m.value())))
    marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
             for p in range(partitions)}
    c.close()
    return out, marks


def idempotent_load():
    """Many batches in flight from an idempotent producer: every record lands exactly once,
    in order per partition, and ListOffsets agrees with what a full read returns."""
    n = OPTS.load
    if n <= 0:
        return
    t = name("idemload")
    create(t, 4)
    in_flight = [0]  # most requests awaiting a response at once, from librdkafka's statistics

    def on_stats(raw):
        stats = json.loads(raw)
        for b in stats.get("brokers", {}).values():
            in_flight[0] = max(in_flight[0], b.get("waitresp_cnt", 0))

    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "acks": "all",
                  "max.in.flight.requests.per.connection": 5, "linger.ms": 5,
                  "batch.num.messages": OPTS.load_batch, "partitioner": "murmur2_random",
                  "statistics.interval.ms": 100, "stats_cb": on_stats})
    errors, delivered = {}, [0]

    def on_delivery(err, _msg):
        if err:
            errors[err.name()] = errors.get(err.name(), 0) + 1
        else:
            delivered[0] += 1

    started = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(t, key=str(i % 1000).encode(), value=str(i).encode(),
                          on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.1)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    produce_s = time.monotonic() - started
    got, marks = read_until_quiet(t, 4)
    values = [v for _, _, v in got]
    distinct = set(values)
    missing = n - len(distinct & set(range(n)))
    per_part = {q: [v for part, _, v in got if part == q] for q in range(4)}
    in_order = all(vs == sorted(vs) for vs in per_part.values())
    ok = not errors and not left and delivered[0] == n and missing == 0 and len(values) == n and in_order
    verdict(f"idempotent producer under load ({n} records, 4 partitions, max.in.flight 5, acks=all, "
            f"batch.num.messages {OPTS.load_batch})",
            ok, f"delivered {delivered[0]} in {produce_s:.1f}s (up to {in_flight[0]} requests "
            f"in flight in 100 ms samples), delivery errors {errors or 'none'}, "
            f"undelivered {left}; read back {len(values)} ({len(distinct)} distinct, {missing} missing, "
            f"{len(values) - len(distinct)} duplicates), per partition "
            f"{ {q: len(vs) for q, vs in per_part.items()} }, in order per partition: {in_order}")
    last = {q: max((o for part, o, _ in got if part == q), default=-1) for q in range(4)}
    wm_ok = all(marks[q][1] - marks[q][0] == len(per_part[q]) and marks[q][1] == last[q] + 1
                for q in range(4))
    verdict("high watermarks (ListOffsets) match a full read", wm_ok,
            f"(low, high) per partition {marks}; records read {[len(per_part[q]) for q in range(4)]}, "
            f"last offset read {[last[q] for q in range(4)]}")


def describe_kafka_error(e):
    err = e.args[0]
    flags = [f for f, on in (("fatal", err.fatal()), ("retriable", err.retriable()),
                             ("txn_requires_abort", err.txn_requires_abort())) if on]
    return f"{err.name()} ({', '.join(flags) or 'not fatal'}): {err.str()}"


def transactions():
    t = name("txn")
    create(t, 1)
    src = name("txsrc")
    create(src, 1)
    group = name("txgroup")
    tid = name("tid")
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": tid})
    # A broker without transactions refuses at one of two points: InitProducerId with a
    # transactional.id, or EndTxn at the first commit (librdkafka checks EndTxn's ApiVersion only
    # when it sends one). Either is a GAP with librdkafka's exact error, not a crashed check.
    try:
        p.init_transactions(15)
    except KafkaException as e:
        verdict("transactions: init_transactions (InitProducerId with transactional.id)", False,
                describe_kafka_error(e))
        return
    p.begin_transaction()
    for i in range(10):
        p.produce(t, key=b"k", value=f"committed-{i}".encode())
    # Offsets committed inside the transaction, as a consume-process-produce loop does.
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False})
    p.send_offsets_to_transaction([TopicPartition(src, 0, 42)], c.consumer_group_metadata(), 15)
    try:
        p.commit_transaction(15)
    except KafkaException as e:
        verdict("transactions: commit_transaction (EndTxn)", False, describe_kafka_error(e))
        c.close()
        return
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
    # confluent-kafka sends a TopicPartition's metadata with its C string's NUL terminator
    # (metadata_size = strlen + 1), so the broker receives "sluice-marker-123\0". rust-rdkafka,
    # which sluice uses, sends the bytes without it. A broker storing metadata as text may refuse
    # the NUL; that is reported, followed by a commit without metadata from a fresh group.
    t = name("meta")
    create(t, 1)
    group = name("metagroup")
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(t, 0, 7, metadata="sluice-marker-123")], asynchronous=False)
    except KafkaException as e:
        c.close()
        plain = Consumer({"bootstrap.servers": BOOT, "group.id": name("metagroup"),
                          "enable.auto.commit": False})
        plain.commit(offsets=[TopicPartition(t, 0, 7)], asynchronous=False)
        back = plain.committed([TopicPartition(t, 0)], timeout=10)[0]
        plain.close()
        verdict("offset commit metadata round-trips", False,
                f"commit with metadata (NUL-terminated by confluent-kafka) failed: "
                f"{e.args[0].name()}; the same commit without metadata read back offset {back.offset}")
        return
    got = c.committed([TopicPartition(t, 0)], timeout=10)[0]
    c.close()
    verdict("offset commit metadata round-trips", (got.metadata or "").rstrip("\0") == "sluice-marker-123",
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
    # The old instance learns it was replaced at its next heartbeat (3 s by default); librdkafka
    # then raises a fatal error, delivered as an error message from poll.
    for _ in range(40):
        for tag, c in (("a", a), ("b", b)):
            try:
                m = c.poll(0.25)
                if m is not None and m.error():
                    errors.append((tag, m.error()))
            except KafkaException as e:
                errors.append((tag, e))
    owners = [tag for tag, c in (("a", a), ("b", b)) if c.assignment()]
    fenced = sorted({tag for tag, e in errors if "FENCED" in str(e).upper()})
    verdict("static membership: duplicate group.instance.id is fenced", bool(fenced) and len(owners) == 1,
            f"consumers owning partitions after 10 s: {owners}; fenced: {fenced or 'none'}"
            + (f" ({next(str(e) for tag, e in errors if tag == fenced[0])})" if fenced else ""))
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
    def probe(extra):
        t = name("auto")
        p = Producer({"bootstrap.servers": BOOT, "message.timeout.ms": 5000, **extra})
        errs = []
        p.produce(t, value=b"x", on_delivery=lambda e, m: e and errs.append(e))
        p.flush(8)
        md = ADMIN.list_topics(timeout=5).topics.get(t)
        return md, errs

    md, errs = probe({})
    verdict("no auto-creation of topics on produce (producer defaults)", md is None,
            "topic was not auto-created" if md is None else
            f"topic was auto-created with {len(md.partitions)} partitions; delivery errors {errs[:1]}")
    md, errs = probe({"allow.auto.create.topics": False})
    verdict("no auto-creation with allow.auto.create.topics=false", md is None,
            f"topic {'was not' if md is None else 'WAS'} created; delivery errors "
            f"{[e.name() for e in errs[:1]]}")


def initial_rebalance_delay():
    """A new group's first rebalance waits group.initial.rebalance.delay.ms for more members:
    a second consumer subscribing 0.3 s after the first joins the same first generation, so the
    first consumer is never given all 4 partitions only to revoke 2."""
    t = name("delay")
    create(t, 4)
    group = name("delaygroup")
    events = []
    started = time.monotonic()

    def consumer(tag):
        c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False,
                      "session.timeout.ms": 30000})
        c.subscribe([t], on_assign=lambda c, ps: events.append((tag, "assign", len(ps), time.monotonic() - started)),
                    on_revoke=lambda c, ps: events.append((tag, "revoke", len(ps), time.monotonic() - started)))
        return c

    a = consumer("a")
    a.poll(0.3)
    b = consumer("b")
    for _ in range(60):
        a.poll(0.1)
        b.poll(0.1)
        if len(a.assignment()) == 2 and len(b.assignment()) == 2:
            break
    firsts = {tag: next((n, s) for tg, kind, n, s in events if tg == tag and kind == "assign")
              for tag in ("a", "b") if any(e[0] == tag and e[1] == "assign" for e in events)}
    revokes = [e for e in events if e[1] == "revoke" and e[2] > 0]
    ok = firsts.get("a", (0,))[0] == 2 and firsts.get("b", (0,))[0] == 2 and not revokes
    verdict("initial rebalance delay: a member joining 0.3 s later is in the first generation", ok,
            "first assignments " + ", ".join(f"{tag}: {n} partitions {s:.2f}s after a subscribed"
                                             for tag, (n, s) in firsts.items())
            + f"; revokes {[(e[0], e[2]) for e in revokes] or 'none'}")
    a.close()
    b.close()
    # A lone member of a new group waits the delay once (no one else joins to extend it).
    lone = Consumer({"bootstrap.servers": BOOT, "group.id": name("delaylone"),
                     "enable.auto.commit": False})
    t0 = time.monotonic()
    lone.subscribe([t])
    wait_assignment([lone], tries=200)
    print(f"     a lone consumer of a new group was assigned {time.monotonic() - t0:.2f}s after "
          f"subscribing", flush=True)
    lone.close()


def compaction_timing():
    """Watch a compacted topic with min.compaction.lag.ms one hour for --compaction-wait seconds:
    Kafka keeps every record; a broker that ignores the lag drops the older values when it runs
    its cleaner. Reports when that happened."""
    wait = OPTS.compaction_wait
    if wait <= 0:
        return
    t = name("compact")
    create(t, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000",
                  "delete.retention.ms": "1000"})
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True})
    for v in (b"a1", b"a2", b"a3"):
        p.produce(t, key=b"a", value=v)
    p.produce(t, key=b"b", value=b"b1")
    p.produce(t, key=b"b", value=None)  # tombstone, with delete.retention.ms 1 s
    flush(p)
    written = time.monotonic()
    seen = None
    while True:
        seen = [(m.key().decode(), None if m.value() is None else m.value().decode())
                for m in consume_all(t, expect=1)]
        elapsed = time.monotonic() - written
        if len(seen) < 5 or elapsed >= wait:
            break
        time.sleep(15)  # the cleaner runs on the broker's own schedule; poll it
    verdict(f"min.compaction.lag.ms=3600000 honoured for {wait:.0f} s", len(seen) == 5,
            f"{'after' if len(seen) < 5 else 'still after'} {elapsed:.0f} s the topic held {seen} "
            f"(5 written; Kafka keeps all 5 for an hour)")


if __name__ == "__main__":
    print(f"broker checks against {BOOT}", flush=True)
    only = {n for n in OPTS.only.split(",") if n}
    for fn in (create_topics_configs, idempotent_producer, idempotent_load, transactions,
               offset_commit_metadata, log_append_time, static_membership, static_member_fencing,
               cooperative_sticky, initial_rebalance_delay, auto_create_topics, compaction_timing):
        if not only or fn.__name__ in only:
            check(fn)
    gaps = sum(1 for r in RESULTS if r[1] != "OK")
    print(f"broker checks: {len(RESULTS) - gaps} ok, {gaps} gaps or errors")
