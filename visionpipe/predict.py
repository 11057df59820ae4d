"""``python -m visionpipe.predict``: the command of visionpipe.deploy.predict (see its help)."""

import sys

from visionpipe.deploy.predict import main

if __name__ == "__main__":
    sys.exit(main())
