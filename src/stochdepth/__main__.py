import sys

from stochdepth.cli import main

sys.exit(main())
