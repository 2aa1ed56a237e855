#!/usr/bin/env bash
# End-to-end check of scripts/stack on this machine: up, up again (idempotent), status, a
# broker restart that must keep topics, records and committed offsets, down, up again.
# Prints "stack selftest: ok" and exits 0 when everything held.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK=$ROOT/scripts/stack

eval "$("$STACK" up)"
"$STACK" up >/dev/null 2>&1 # a second up must succeed and start nothing new
"$STACK" status
[ -n "${SLUICE_BROKERS:-}" ] || { echo "stack selftest: up printed no SLUICE_BROKERS" >&2; exit 1; }
curl -fsS -o /dev/null "$SLUICE_S3_ENDPOINT/$SLUICE_S3_BUCKET" ||
  { echo "stack selftest: bucket $SLUICE_S3_BUCKET missing at $SLUICE_S3_ENDPOINT" >&2; exit 1; }
curl -fsS -o /dev/null "$SLUICE_TSDB_QUERY_URL/health" ||
  { echo "stack selftest: TSDB not answering at $SLUICE_TSDB_QUERY_URL" >&2; exit 1; }
python3 "$ROOT/scripts/lib/broker_durability.py" 2>&1 | grep -v '^%'
"$STACK" down
status=$("$STACK" status) # not piped into grep -q: pipefail would see status's SIGPIPE
grep -q '^broker  *down' <<<"$status" || { echo "stack selftest: broker still up after down" >&2; exit 1; }
eval "$("$STACK" up)"
status=$("$STACK" status)
grep -q '^broker  *up' <<<"$status" || { echo "stack selftest: broker not up again" >&2; exit 1; }
echo "stack selftest: ok"
