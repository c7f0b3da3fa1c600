#!/usr/bin/env bash
# make test-under-load: README's test command while two CPU hogs and an I/O hog run (Debian's
# stress-ng), the check that no test depends on an idle machine. Arguments go to pytest through
# PYTEST_ARGS, e.g. `make test-under-load PYTEST_ARGS="tests/mpy/test_journal_mem.py"`.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v stress-ng >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-under-load: installing stress-ng (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q stress-ng >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q stress-ng >/dev/null; }
  fi
  command -v stress-ng >/dev/null || {
    echo "test-under-load needs stress-ng: sudo apt-get install stress-ng" >&2
    exit 2
  }
fi

scratch=$(mktemp -d)
# --cpu 2: two busy workers; --iomix 1 with a small file: reads, writes and syncs in a temporary
# folder, so file-backed tests wait on a busy disk as they would beside other work.
stress-ng --cpu 2 --iomix 1 --iomix-bytes 64m --temp-path "$scratch" --timeout 0 --quiet &
hog=$!
stop_hogs() {
  kill "$hog" 2>/dev/null
  wait "$hog" 2>/dev/null
  rm -rf "$scratch"
}
trap stop_hogs EXIT INT TERM
sleep 2
kill -0 "$hog" 2>/dev/null || { echo "stress-ng did not start" >&2; exit 2; }

start=$(date +%s)
echo "test-under-load: stress-ng pid $hog (2 CPU hogs, 1 I/O hog), load $(cut -d' ' -f1-3 /proc/loadavg)"
make test PYTEST_ARGS="${PYTEST_ARGS:-}"
rc=$?
echo "test-under-load: make test exit $rc after $(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
