"""Operator tools over stored data: validation, cost, stats, agreement, charts, pool and taxonomy
operations."""
