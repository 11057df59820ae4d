"""``python -m visionpipe.simulate``: the command of visionpipe.deploy.simulate (see its help)."""

import sys

from visionpipe.deploy.simulate import main

if __name__ == "__main__":
    sys.exit(main())
