"""MODALINK: in-the-wild video to a synchronized audio-video-text dataset."""
__version__ = "0.1.0"
