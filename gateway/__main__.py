"""``python -m gateway`` is ``erpgw``."""

from .cli import main

raise SystemExit(main())
