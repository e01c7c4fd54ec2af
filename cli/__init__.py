"""The `tuneforge` command."""
