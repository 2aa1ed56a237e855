#!/usr/bin/env python3
"""Read a sluice output topic exactly once, as a consumer outside sluice.

Guarantee shown: after a crash, a sluice stage replays its last uncommitted batch and writes
byte-identical copies of records it had already written (same key, value and `sluice.id`).
A plain consumer sees those copies; this one drops them with the rule sluice's own consumers
use: per (topic partition, producing stage, producing partition) keep the highest sequence
number accepted, and drop every record at or below it. Records without a `sluice.id` (written
by something other than sluice) pass through.

To be exactly once, keep the marks and your read positions in the same transaction as what you
do with the records (the same database commit, the same file rename). Here each batch's records
are appended to --out, then the marks, the next offset of every partition and the length of
--out are written to --state atomically (a rename). On start, --out is cut back to the length
the state names, so a crash between the two writes undoes the half-done batch, which is read
again from the saved offsets (the consumer seeks there on every assignment and needs no Kafka
offset commits). On a broker with transactions and `exactly_once_transactional`, read with
`isolation.level=read_committed` instead: replayed copies are in aborted transactions and never
delivered (docs/EXACTLY_ONCE.md, "What a plain consumer sees").

    python3 exactly_once_consumer.py --brokers 127.0.0.1:19092 --topic iot.alerts \
        --group alerts-pager --state state.json --out alerts.jsonl [--until-quiet 5]
"""

import argparse
import json
import os
import struct
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError

ID_HEADER = "sluice.id"


def parse_id(raw):
    """(stage, partition, seq) from a `sluice.id` header value, binary or the older text."""
    if raw and raw[0] == 1:  # binary: version 1, partition i32 BE, seq u64 BE, stage name
        if len(raw) <= 13:
            raise ValueError("binary sluice.id shorter than 14 bytes")
        partition, seq = struct.unpack(">iQ", raw[1:13])
        return raw[13:].decode("utf-8"), partition, seq
    stage, partition, seq = raw.decode("utf-8").rsplit("/", 2)  # <stage>/<partition>/<seq>
    return stage, int(partition), int(seq)


def load_state(path):
    """{"marks": {mark: seq}, "offsets": {"topic/partition": next offset}, "out_bytes": n}"""
    if not os.path.exists(path):
        return {"marks": {}, "offsets": {}, "out_bytes": 0}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_atomically(path, text):
    """Replaces `path` so that a crash leaves the old or the new file, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state", required=True, help="JSON file of high-water marks and offsets")
    ap.add_argument("--out", required=True, help="JSON lines of the records accepted")
    ap.add_argument("--until-quiet", type=float, default=0,
                    help="stop after this many seconds without a record (0: run forever)")
    a = ap.parse_args()

    state = load_state(a.state)
    marks, offsets = state["marks"], state["offsets"]
    # Undo what a crash left after the last saved state: it is read again below.
    with open(a.out, "ab") as out:
        out.truncate(state["out_bytes"])

    quiet_since = [None]  # set at the first assignment: a group join takes a moment

    def on_assign(consumer, partitions):
        quiet_since[0] = time.monotonic()
        for p in partitions:
            p.offset = offsets.get(f"{p.topic}/{p.partition}", OFFSET_BEGINNING)
        consumer.assign(partitions)

    consumer = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([a.topic], on_assign=on_assign)
    accepted = dropped = 0
    try:
        while True:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            if not batch:
                since = quiet_since[0]
                if a.until_quiet and since and time.monotonic() - since > a.until_quiet:
                    break
                continue
            quiet_since[0] = time.monotonic()
            lines = []
            for m in batch:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        print(f"consumer error: {m.error()}", file=sys.stderr)
                    continue
                offsets[f"{m.topic()}/{m.partition()}"] = m.offset() + 1
                raw = dict(m.headers() or []).get(ID_HEADER)
                if raw is not None:
                    stage, producer_partition, seq = parse_id(raw)
                    mark = f"{m.topic()}/{m.partition()}/{stage}/{producer_partition}"
                    if seq <= marks.get(mark, 0):
                        dropped += 1
                        continue
                    marks[mark] = seq
                accepted += 1
                lines.append(json.dumps({
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": (m.key() or b"").hex(),
                    "value": (m.value() or b"").hex(),
                    "id": raw.hex() if raw is not None else None,
                }) + "\n")
            # The effects first, then the marks with the positions they reached.
            with open(a.out, "ab") as out:
                out.write("".join(lines).encode())
                out.flush()
                os.fsync(out.fileno())
                state["out_bytes"] = out.tell()
            write_atomically(a.state, json.dumps(state, sort_keys=True))
    finally:
        consumer.close()
    print(json.dumps({"accepted": accepted, "dropped_repeats": dropped}))


if __name__ == "__main__":
    main()
