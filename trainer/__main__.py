"""``python -m trainer``: see :mod:`trainer.cli`."""

from __future__ import annotations

from trainer.cli import main

raise SystemExit(main())
