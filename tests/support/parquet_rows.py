"""Prints the rows of Parquet files as JSON lines, read with pyarrow (an engine other than the
one that wrote them): tests/sinks_e2e.rs compares them with what the input makes.

    python3 parquet_rows.py FILE...

One line per file, {"file": ..., "schema": {column: arrow type}}, then one per row,
{"file": ..., "row": {...}}: timestamps as ms since the epoch, dates as days, decimals as
floats, binary as lists of bytes, maps as objects. Hive partitioning is off: each file is
read as it is.
"""

import datetime
import decimal
import json
import sys

import pyarrow.parquet as pq

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, datetime.date):
        return (v - EPOCH.date()).days
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray)):
        return list(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        if v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
            return {k: plain(x) for k, x in v}
        return [plain(x) for x in v]
    return v


for path in sys.argv[1:]:
    table = pq.read_table(path, partitioning=None)
    print(json.dumps({"file": path, "schema": {f.name: str(f.type) for f in table.schema}}))
    for row in table.to_pylist():
        print(json.dumps({"file": path, "row": {k: plain(v) for k, v in row.items()}}))
