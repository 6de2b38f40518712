-- Calendar coverage (SPEC §2): a case's (and its alerts') deadlines or working times that
-- needed a year without holiday data were guessed as Monday–Friday and are provisional.
-- Existing rows were computed before coverage was tracked and read as 0.
ALTER TABLE cases ADD COLUMN calendar_provisional UInt8 DEFAULT 0;
ALTER TABLE alerts ADD COLUMN calendar_provisional UInt8 DEFAULT 0;
