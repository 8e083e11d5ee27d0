"""`python -m kubetune.cli`: the same as the `kubetune` command."""

import sys

from kubetune.cli.command import main

sys.exit(main())
