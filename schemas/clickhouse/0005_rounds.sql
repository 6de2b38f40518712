-- Rounds (SPEC §4): an alert raised, revoked and raised again is a new round; the rows of an
-- anomaly, its alert and every delivery attempt carry it (1 for rows written before).
ALTER TABLE anomalies ADD COLUMN round UInt32 DEFAULT 1;
ALTER TABLE alerts ADD COLUMN round UInt32 DEFAULT 1;
ALTER TABLE alert_deliveries ADD COLUMN round UInt32 DEFAULT 1;
