"""Alembic migrations for the registry database (run through ``registry db upgrade``)."""
