"""tools.collector.testserver on a throw-away PostgreSQL server (for `# mpy: server=` lines)."""

import sys

from .testserver import main

if __name__ == "__main__":
    main(sys.argv[1:] + ["--pg"])
