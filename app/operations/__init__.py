"""Operational endpoints: health, readiness, metrics."""
