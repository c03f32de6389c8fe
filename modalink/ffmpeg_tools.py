"""Where the ffmpeg and ffprobe binaries are, and how to run them (argument lists, never a shell)."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path


class FFmpegError(RuntimeError):
    """ffmpeg or ffprobe exited with an error; `reason` is its complaint in one line (`complaint`),
    which ends the message."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


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
    """The format and streams of `path` (ffprobe's JSON). Raises FFmpegError with ffprobe's complaint."""
    command = [find_binary("ffprobe"), "-v", "error", "-hide_banner", "-show_format", "-show_streams",
               "-of", "json", path]
    return json.loads(_run(command, None, capture=True) or b"{}")


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
        reason = complaint(proc.stderr, command[1:])
        raise FFmpegError(f"{Path(command[0]).name} failed (exit {proc.returncode}): {reason}", reason)
    return proc.stdout or b""


_CONTEXT = re.compile(r"^\[[^\]]* @ (0x)?[0-9a-fA-F]+\]\s*")  # "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c1a2] "


def complaint(stderr: bytes | None, arguments: list[str] = (), lines: int = 2, limit: int = 300) -> str:
    """ffmpeg's error output as one line: its last `lines` different messages (no version banner, no
    "[demuxer @ 0x...]" context, no "FILE: " before a message about an input or output named in
    `arguments`), joined by "; ", at most `limit` characters."""
    messages: list[str] = []
    for line in (stderr or b"").decode("utf-8", "replace").splitlines():
        line = _CONTEXT.sub("", line.strip())
        for argument in arguments:
            if argument and line.startswith(f"{argument}: "):
                line = line[len(argument) + 2:]
        if line and not _is_banner(line):
            if line in messages:
                messages.remove(line)
            messages.append(line)
    text = "; ".join(messages[-lines:]) or "no error output"
    return text if len(text) <= limit else f"...{text[-limit:]}"


def _is_banner(line: str) -> bool:
    """A line of the version banner that ffmpeg prints without -hide_banner."""
    return line.startswith(("ffmpeg version", "ffprobe version", "built with", "configuration:")) or bool(
        re.match(r"^lib\w+\s+\d+\.\s*\d+\.\s*\d+ / ", line))
