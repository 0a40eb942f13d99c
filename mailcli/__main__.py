"""``python -m mailcli``."""

from .app import main

raise SystemExit(main())
