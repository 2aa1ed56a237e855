#!/bin/sh
# docker compose one-shot `questdb-init`: runs every deploy/questdb/*.sql through QuestDB's
# HTTP /exec endpoint, in name order. CREATE TABLE IF NOT EXISTS makes a re-run harmless.
set -eu
QUESTDB_HTTP="${QUESTDB_HTTP:-http://questdb:9000}"
i=0
until curl -fsS -o /dev/null "$QUESTDB_HTTP/exec?query=select%201"; do
  i=$((i + 1))
  [ "$i" -le 60 ] || { echo "questdb-init: no QuestDB at $QUESTDB_HTTP" >&2; exit 1; }
  sleep 2
done
for f in "$(dirname "$0")"/*.sql; do
  echo "questdb-init: $f"
  # Comment lines stripped; `query@-` sends the rest as the url-encoded `query` parameter.
  grep -v '^--' "$f" | curl -fsS -G "$QUESTDB_HTTP/exec" --data-urlencode "query@-"
  echo
done
echo "questdb-init: tables ready"
