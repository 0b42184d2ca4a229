"""Request ids, structured logs and the per-request middleware that ties them to the metrics."""
