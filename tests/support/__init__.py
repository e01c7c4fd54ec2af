"""Test harness: real processes, real services, loopback only."""
