"""Where the ffmpeg and ffprobe binaries are, and how to run them (argument lists, never a shell)."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path


class FFmpegError(RuntimeError):
    """ffmpeg or ffprobe exited with an error; the message ends with the tail of its stderr."""


class FFmpegKilled(FFmpegError):
    """ffmpeg was killed by a signal (the OOM killer, `kill`): says nothing about the input."""


@lru_cache(maxsize=None)
def find_binary(name: str) -> str:
    """MODALINK_FFMPEG / MODALINK_FFPROBE, then the virtual environment's bin, then PATH.

    `make` puts static ffmpeg and ffprobe into the virtual environment when the machine has none.
    """
    override = os.environ.get(f"MODALINK_{name.upper()}")
    if override:
        return override
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found:
        return found
    if name == "ffmpeg":
        try:
            import imageio_ffmpeg

            return imageio_ffmpeg.get_ffmpeg_exe()
        except Exception:  # noqa: BLE001 - not installed or no binary for this platform
            pass
    raise FFmpegError(f"{name} not found: install it (e.g. apt-get install ffmpeg) or run `make` to bootstrap one")


def ffmpeg(*args: str, input_bytes: bytes | None = None, capture: bool = False) -> bytes:
    """Run ffmpeg quietly; returns stdout when `capture`. Raises FFmpegError with stderr on failure,
    OSError (ENOSPC) when it failed because the disk is full."""
    command = [find_binary("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    return _run(command, input_bytes, capture)


def ffprobe_json(path: str) -> dict:
    import ffmpeg as ffmpeg_python  # ffmpeg-python

    try:
        return ffmpeg_python.probe(path, cmd=find_binary("ffprobe"))
    except ffmpeg_python.Error as exc:
        raise FFmpegError(_tail(exc.stderr)) from None


def _run(command: list[str], input_bytes: bytes | None, capture: bool) -> bytes:
    proc = subprocess.run(
        command,
        input=input_bytes,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode < 0:
        raise FFmpegKilled(f"{Path(command[0]).name} was killed by signal {-proc.returncode}")
    if proc.returncode != 0 and os.strerror(errno.ENOSPC).encode() in (proc.stderr or b""):
        # a full disk, not a bad input: an OSError as Python's own writes raise it, so the run stops
        raise OSError(errno.ENOSPC, f"{Path(command[0]).name} could not write its output: {os.strerror(errno.ENOSPC)}")
    if proc.returncode != 0:
        raise FFmpegError(f"{Path(command[0]).name} failed (exit {proc.returncode}): {_tail(proc.stderr)}")
    return proc.stdout or b""


def _tail(stderr: bytes | None, limit: int = 600) -> str:
    text = (stderr or b"").decode("utf-8", "replace").strip()
    return text[-limit:] if text else "no error output"
