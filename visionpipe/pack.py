"""``python -m visionpipe.pack``: the command of visionpipe.onboard.pack (see its help)."""

import sys

from visionpipe.onboard.pack import main

if __name__ == "__main__":
    sys.exit(main())
