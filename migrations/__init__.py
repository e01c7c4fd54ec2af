"""Alembic migrations; `tuneforge migrate` runs them (shared.migrate)."""
