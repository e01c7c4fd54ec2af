"""Routers; each route parses, calls one domain function, and returns a schema."""
