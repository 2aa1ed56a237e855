-- Closed windows from the aggregate stage. DEDUP UPSERT makes a replayed window (after a
-- crash between the ILP flush and the offset commit) overwrite itself instead of doubling.
-- The sink writes device_id, metric, window and detector as ILP symbols.
CREATE TABLE IF NOT EXISTS aggregates (
  ts TIMESTAMP,
  device_id SYMBOL,
  metric SYMBOL,
  "window" SYMBOL,
  "count" LONG,
  "min" DOUBLE,
  "max" DOUBLE,
  mean DOUBLE,
  stddev DOUBLE
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, device_id, metric, "window")
