#!/usr/bin/env python3
"""The seed's `scripts/generate_test_load.py`, kept so its commands work verbatim.

Equivalent to `polaris-twin load` (see docs/seed-commands.md).
"""

import sys

from twin.tools.loadgen import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
