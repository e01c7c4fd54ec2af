"""Datasets: the pure transform (`pipeline`, `presets`, `report`) and, beside it, the DB-facing service."""
