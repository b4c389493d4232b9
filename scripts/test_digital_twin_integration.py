#!/usr/bin/env python3
"""The seed's `scripts/test_digital_twin_integration.py`, kept so its commands work verbatim.

Equivalent to `polaris-twin verify` (see docs/seed-commands.md).
"""

import sys

from twin.tools.verify import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
