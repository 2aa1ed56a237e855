-- Anomalies from the detect stage, one row per (time, device, metric, detector).
CREATE TABLE IF NOT EXISTS anomalies (
  ts TIMESTAMP,
  device_id SYMBOL,
  metric SYMBOL,
  detector SYMBOL,
  value DOUBLE,
  score DOUBLE
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, device_id, metric, detector)
