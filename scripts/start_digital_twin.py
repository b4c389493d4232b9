#!/usr/bin/env python3
"""The seed's `scripts/start_digital_twin.py`, kept so its commands work verbatim.

Equivalent to `polaris-twin` (see docs/seed-commands.md).
"""

import sys

from twin.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
