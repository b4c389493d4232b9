#!/usr/bin/env python3
"""The seed's `scripts/monitor_digital_twin_performance.py`, kept so its commands work verbatim.

Equivalent to `polaris-twin top` (see docs/seed-commands.md).
"""

import sys

from twin.tools.monitor import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
