"""``python -m polaris_operator``."""

from .main import main

main()
