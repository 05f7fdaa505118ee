-- The subgroups of the AI's monitoring in production, per image as ingest read
-- them from the dataset (InstanceStored fields 21-24): PatientSex (M, F, O or
-- empty), the age in whole years (NULL when not stated) and the equipment.
ALTER TABLE instances
    ADD COLUMN patient_sex TEXT NOT NULL DEFAULT '',
    ADD COLUMN patient_age_years INTEGER,
    ADD COLUMN manufacturer TEXT NOT NULL DEFAULT '',
    ADD COLUMN manufacturer_model TEXT NOT NULL DEFAULT '';
