"""`python -m mimird` runs the daemon, as the `mimird` console script does."""

from mimird.cli import main

raise SystemExit(main())
