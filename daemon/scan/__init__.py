"""Everything a scan worker process runs for one batch: read, infer, report."""
