-- Delivery as the receivers define it (SPEC §4): the robot's errcode of each attempt (0 when
-- there is none); the outcome `given_up` joins delivered, retry, rejected and exhausted.
ALTER TABLE alert_deliveries ADD COLUMN errcode Int64 DEFAULT 0;
