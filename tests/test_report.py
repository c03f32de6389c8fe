"""DIR/report.html (tasks/report.py): its pure pieces (the funnel, an SVG histogram, escaping), and the
page of a real build (two GRID clips, one labelled, and a video with no audio stream that fails)
opened from file:// in headless Chromium: no console error, every image and player loads, and a
screenshot to look at."""
import json
import re
import shutil

import pytest

from flows.build import build_dataset
from modalink.cli import main
from modalink.exports import DatasetRecords, exporters
from tasks.report import REPORT, bins, box_style, funnel, histogram, render_report, spread

WHISPER = {"asr": {"backend": "whisper", "language": "en-US", "model": "tiny.en"}}
CLIPS = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "face_noaudiostream_liveportrait_d0.mp4"]


def video(video_id, **fields):
    return {"video_id": video_id, "status": "ok", "speech_segments": 0, "segments_found": 0, "segments_kept": 0,
            "segments_dropped": {}, "width": 360, "height": 288, **fields}


def segment(segment_id, video_id, **fields):
    return {"segment_id": segment_id, "video_id": video_id, "start": 0.0, "end": 2.0, "duration": 2.0,
            "video_clip": f"video_clips/{video_id}/{segment_id}.mp4", "audio_clip": f"audio_clips/{video_id}/{segment_id}.wav",
            "frame": f"video_frames/{video_id}/{segment_id}.jpg", "active_face": {"x": 36, "y": 28.8, "w": 180, "h": 144},
            "transcript": "hello there", "transcript_status": "ok", "language": "en-US", **fields}


def test_the_funnel_sums_the_videos_and_every_drop_reason():
    videos = [video("a", speech_segments=5, segments_found=7, segments_kept=3,
                    segments_dropped={"too_short": 2, "no_face": 1, "overlap": 0}),
              video("b", speech_segments=2, segments_found=2, segments_kept=0, segments_dropped={"no_face": 1, "error": 1}),
              video("c", status="failed", error="has no audio stream", segments_dropped=None)]
    assert funnel(videos) == [("speech segments (VAD)", 7), ("segments found (speaker split)", 9),
                              ("dropped: error", 1), ("dropped: no_face", 2), ("dropped: overlap", 0),
                              ("dropped: too_short", 2), ("segments kept", 3)]


def test_histogram_bins_and_svg():
    assert bins([]) == [] and bins([2.0, 2.0]) == [(2.0, 2.0, 2)]
    found = bins([0.0, 0.5, 1.0, 9.99, 10.0], 10)
    assert [n for _, _, n in found] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2] and found[0][:2] == (0.0, 1.0)
    svg = histogram("Segment duration", [0.0, 0.5, 1.0, 9.99, 10.0], "s")
    assert svg.count("<rect") == 10 and "<svg" in svg and "n=5" in svg
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"', svg)]
    assert heights[0] == max(heights) == heights[-1] and heights[2] == 0


def test_the_face_box_is_in_percent_of_the_source_frame():
    assert box_style({"x": 36, "y": 28.8, "w": 180, "h": 144}, {"width": 360, "height": 288}) == \
        "left:10.00%;top:10.00%;width:50.00%;height:50.00%"


def test_the_sample_is_spread_over_the_videos():
    segments = [segment(f"a-{k}", "a") for k in range(5)] + [segment("b-0", "b"), segment("c-0", "c")]
    assert [s["segment_id"] for s in spread(segments, 4)] == ["a-0", "b-0", "c-0", "a-1"]


def test_strings_from_records_are_escaped_and_arabic_is_right_to_left():
    hostile = '<script>alert("x")</script>'
    records = DatasetRecords(
        [segment("s1", "v<1>", transcript=hostile, custom={"expressions": {"top": "<b>joy</b>", "margin": 0.2}}),
         segment("s2", "v<1>", transcript="مرحبا بكم", language="ar-EG")],
        [video("v<1>", speech_segments=2, segments_found=2, segments_kept=2, license='"><img src=x onerror=alert(1)>',
               error="<i>bad</i>")])
    page = render_report(records)
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "<b>joy" not in page and "<i>bad" not in page and "v&lt;1&gt;" in page
    assert re.search(r'<div class="transcript" dir="rtl" lang="ar-EG">مرحبا بكم</div>', page)
    assert re.search(r'<div class="transcript" lang="en-US">&lt;script', page)
    assert 'href="http' not in page and "cdn" not in page.lower()


@pytest.fixture(scope="module")
def dataset(prefect_server, media, tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "ds"
    build_dataset([str(media / clip) for clip in CLIPS], str(root), WHISPER)
    assert (root / REPORT).is_file()  # every build writes it
    segments = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    labels = [{"annotator": "a@example.com", "annotator_id": 1, "emotion": "joy", "sentiment": "positive"},
              {"annotator": "b@example.com", "annotator_id": 2, "emotion": "neutral", "sentiment": "neutral"},
              {"annotator": "c@example.com", "annotator_id": 3, "emotion": "joy", "sentiment": "positive"}]
    (root / "labels.jsonl").write_text(json.dumps({"segment_id": segments[0]["segment_id"], "labels": labels}) + "\n")
    return root, segments


def test_report_command_rewrites_it_and_it_is_then_current(dataset, capsys):
    root, segments = dataset
    before = (root / REPORT).read_text()
    assert "not labelled" in before and "Label agreement" not in before
    assert main(["report", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / REPORT)
    page = (root / REPORT).read_text()
    assert "Label agreement" in page and "joy (agreement 0.67" in page and "has no audio stream" in page
    from modalink.storage import open_storage
    from tasks.publish import merged_records_as_published

    storage = open_storage(str(root))
    exporter = next(e for e in exporters() if e.name == REPORT)
    assert exporter.is_current(storage, merged_records_as_published(storage))


def test_the_page_in_chromium(dataset, tmp_path):
    from cdp import Chromium, chromium_path

    root, segments = dataset
    main(["report", str(root)])
    assert chromium_path(), "no chromium (make test installs Debian's)"
    chromium = Chromium(tmp_path / "chromium-profile", width=1200, height=1400)
    try:
        chromium.send("Log.enable")
        chromium.send("Emulation.setDeviceMetricsOverride", width=1200, height=1400, deviceScaleFactor=1, mobile=False)
        chromium.send("Page.navigate", url=(root / REPORT).as_uri())
        chromium.wait_for("document.readyState === 'complete'")
        loaded = chromium.wait_for("""(() => {
            const media = [...document.querySelectorAll('video, audio')];
            const imgs = [...document.querySelectorAll('img')];
            if (!imgs.every(i => i.complete) || !media.every(m => m.readyState >= 1 || m.error)) return null;
            return {imgs: imgs.map(i => [i.getAttribute('src'), i.naturalWidth]),
                    media: media.map(m => [m.tagName, m.getAttribute('src'), m.readyState, m.duration, !!m.error]),
                    svgs: document.querySelectorAll('svg').length, text: document.body.innerText}; })()""", 60)
        assert len(loaded["imgs"]) == len(segments) and all(width == 360 for _, width in loaded["imgs"]), loaded["imgs"]
        assert len(loaded["media"]) == 2 * len(segments)
        assert all(state >= 1 and duration > 0.5 and not error for _, _, state, duration, error in loaded["media"]), \
            loaded["media"]
        assert loaded["svgs"] >= 7 and "segments kept" in loaded["text"] and segments[0]["transcript"] in loaded["text"]
        errors = [e for e in chromium.events
                  if e["method"] == "Runtime.exceptionThrown"
                  or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                  or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        assert errors == []
        shot = chromium.screenshot(tmp_path / "report.png")
        full = chromium.screenshot(tmp_path / "report-full.png", full_page=True)
        print(f"report screenshots: {shot} {full}")
        assert shot.stat().st_size > 20_000
        shutil.copy(shot, tmp_path.parent / "report-latest.png")
    finally:
        chromium.close()


def test_whole_numbers_get_one_bar_per_value():
    svg = histogram("Transcript length", [3, 5, 5, 5], "words", digits=0)
    assert svg.count("<rect") == 3
    labels = re.findall(r'fill="#5b6675">([^<]*)</text>', svg)
    assert labels == ["3", "4", "5"]
