"""`python -m localseek` runs the command line."""

from localseek.cli import main

raise SystemExit(main())
