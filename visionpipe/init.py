"""``python -m visionpipe.init``: the command of visionpipe.onboard.init (see its help)."""

import sys

from visionpipe.onboard.init import main

if __name__ == "__main__":
    sys.exit(main())
