"""The `moe-playground` command line (`python -m moe_core`)."""
