"""Fetch the pinned micropython-lib packages the unix-port tests need into .venv/mplib.

micropython-lib publishes some packages to PyPI as plain source archives that pip cannot install
(they carry no setup.py), so we take the archive from the same index pip uses, check its pinned
SHA-256 and unpack the .py files. On a board the same packages come from `mpremote mip install`.
"""

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

from pip._internal.models.index import PyPI

# name -> (archive file name, sha256, files to take from the archive)
PINNED = {
    "micropython-ssd1306": (
        "micropython-ssd1306-0.3.tar.gz",
        "d00cae1ff680e6ae504e258e700f002874b0d924b1a604253b6ea63144b58289",
        ("ssd1306.py",),
    ),
}


def fetch(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, (archive, sha256, members) in PINNED.items():
        if all((dest / m).exists() for m in members):
            continue
        req = urllib.request.Request(
            f"{PyPI.simple_url}/{name}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            index = json.load(resp)
        url = next(f["url"] for f in index["files"] if f["filename"] == archive)
        with urllib.request.urlopen(url, timeout=60) as resp:
            blob = resp.read()
        got = hashlib.sha256(blob).hexdigest()
        if got != sha256:
            sys.exit(f"mplib_fetch: {archive}: sha256 {got} does not match the pinned {sha256}")
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            for info in tar.getmembers():
                base = info.name.rsplit("/", 1)[-1]
                if base in members:
                    (dest / base).write_bytes(tar.extractfile(info).read())
        print(f"mplib_fetch: {archive} -> {dest}")


if __name__ == "__main__":
    fetch(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv/mplib"))
