"""``python -m mailcli``."""

from .console import main

raise SystemExit(main())
