"""Celery tasks: thin, idempotent, ids in; each calls domain functions and commits."""
