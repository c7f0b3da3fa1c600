"""Test fixture for tests/mpy/test_params_million_delta.py (the plugin's ``server=`` directive):
builds (once, cached under build/params-fixture/) the million-card bundle and a merged delta of
100,000 cards on it (tools/params_compile.py build_delta_fixture), prints ``PORT 0`` and waits
to be stopped."""

import sys
import time

from tools import params_compile


def main(argv=None):
    params_compile.link_fixture(delta=True)
    print("PORT 0", flush=True)
    time.sleep(3600)  # the plugin terminates the fixture when the test file is done
    return 0


if __name__ == "__main__":
    sys.exit(main())
