"""``python -m fleetgate``: same as the ``fleetgate`` console script."""

from fleetgate.cli import main

raise SystemExit(main())
