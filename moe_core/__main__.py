"""`python -m moe_core ...`: the moe-playground command line."""

from moe_core.cli.main import main

raise SystemExit(main())
