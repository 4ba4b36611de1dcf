"""What the ingest service keeps: the SQL catalog (tables, one repository per kind of record,
records) and the blob store of uploaded originals. Used by the API and the worker alike."""
