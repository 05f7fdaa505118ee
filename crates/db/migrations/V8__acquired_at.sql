-- When each image was acquired, as ingest read it from the dataset
-- (InstanceStored.acquired_at): the start of a study's turnaround in the
-- analytics. NULL when the dataset states none, or an implausible one.
ALTER TABLE instances ADD COLUMN acquired_at TIMESTAMPTZ;
