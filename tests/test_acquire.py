import json

import pytest

from modalink.config import AcquireConfig
from tasks.acquire import SourceError, download, expand_sources, file_fingerprint, local_video


def test_files_and_folders_expand_to_videos(media):
    found = expand_sources([str(media), str(media / "av_grid_bbaf2n.mpg")], AcquireConfig())
    names = [p.rsplit("/", 1)[-1] for p in found]
    assert "av_grid_bbaf2n.mpg" in names and "noface_music_bigbuckbunny_0_30.webm" in names
    assert names.count("av_grid_bbaf2n.mpg") == 1  # a file named twice is processed once
    assert not any(n.endswith((".flac", ".wav", ".md", ".align")) for n in names)  # only video files


@pytest.mark.parametrize("source, message", [
    ("/no/such/file.mp4", "no such file or folder"),
])
def test_missing_sources_are_named(source, message):
    with pytest.raises(SourceError, match=message):
        expand_sources([source], AcquireConfig())


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no video files"):
        expand_sources([str(tmp_path)], AcquireConfig())


def test_local_video_ids_are_stable_and_content_based(media, tmp_path):
    a = local_video(media / "av_grid_bbaf2n.mpg")
    assert a == local_video(media / "av_grid_bbaf2n.mpg") and a.video_id.startswith("av_grid_bbaf2n-")
    copy = tmp_path / "av_grid_bbaf2n.mpg"
    copy.write_bytes((media / "av_grid_bbaf2n.mpg").read_bytes()[:-10])
    assert file_fingerprint(copy) != a.fingerprint


def test_download_keeps_info_json_and_skips_what_it_has(media_server, tmp_path):
    url = f"{media_server.url}/av_grid_swiz3n.mpg"
    video = download(url, AcquireConfig(), str(tmp_path))
    assert video.source == url and video.info["url"] == url and video.video_id == "generic-av_grid_swiz3n"
    info = json.loads(next(tmp_path.glob("*.info.json")).read_text())
    assert info["id"] == "av_grid_swiz3n"
    assert video.fingerprint == file_fingerprint(video.path)
    media_server.paths.clear()
    killed = tmp_path / "Generic-av_grid_swiz3n.info.json.xskfx38e.tmp"  # yt-dlp's, from a run killed while writing
    killed.write_text("{")
    again = download(url, AcquireConfig(), str(tmp_path))
    assert again == video and not killed.exists()
    assert media_server.paths.count("/av_grid_swiz3n.mpg") <= 1  # at most the page probe, never a second download


def test_playlist_page_expands_to_its_videos(media_server):
    found = expand_sources([f"{media_server.url}/playlist.html"], AcquireConfig())
    assert found == [f"{media_server.url}/av_grid_bbaf2n.mpg", f"{media_server.url}/av_grid_lwbsza.mpg"]


@pytest.mark.parametrize("path, message", [
    ("/missing.mp4", "404"),
    ("/no-video.html", "Unsupported URL"),
])
def test_urls_yt_dlp_cannot_handle_are_clear_errors(media_server, tmp_path, path, message):
    with pytest.raises(SourceError, match=message):
        download(f"{media_server.url}{path}", AcquireConfig(), str(tmp_path))
