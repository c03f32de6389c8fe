import pytest

from modalink.config import FaceConfig
from modalink.records import FaceBox, Segment
from tasks.acquire import local_video
from tasks.faces import detect_faces, frame_times, pick_active_face, to_source_box
from tasks.faces_decoding import scaled_size
from tasks.probe import probe


@pytest.mark.parametrize("start, end, fps, max_frames, expected", [
    (0.0, 3.0, 1.0, 10, [0.0, 1.0, 2.0]),
    (0.45, 2.22, 1.0, 10, [0.45, 1.45]),
    (5.0, 5.4, 1.0, 10, [5.0]),  # a short segment still gets one frame
    (0.0, 30.0, 1.0, 10, [float(k) for k in range(10)]),  # only the first 10
    (1.0, 2.0, 4.0, 10, [1.0, 1.25, 1.5, 1.75]),
])
def test_frame_times(start, end, fps, max_frames, expected):
    assert frame_times(start, end, fps, max_frames) == expected


def test_largest_face_is_the_speaker():
    small = FaceBox(10, 10, 20, 20, 0.99, 0.0)
    large = FaceBox(50, 50, 60, 80, 0.95, 1.0)
    result = pick_active_face([small, large, small], frames_analysed=2)
    assert result.active == large and len(result.faces) == 3
    assert pick_active_face([], 3).active is None


def test_boxes_map_back_to_source_pixels_and_stay_inside():
    box = to_source_box({"box": [-4, 10, 50, 300], "confidence": 0.9}, 2.0, 2.0, 2.0, (180, 144))
    assert (box.x, box.y, box.w, box.h) == (0.0, 20.0, 92.0, 268.0)
    assert scaled_size(1280, 720, 0.5) == (640, 360) and scaled_size(361, 289, 0.5) == (180, 144)


def test_mtcnn_finds_the_grid_speaker_inside_the_frame(media):
    video = local_video(media / "av_grid_bbaf2n.mpg")
    info = probe(video.path)
    result = detect_faces(video, info, Segment(video.video_id, 0, 0, 0.5, 2.2), FaceConfig())
    assert result.frames_analysed == 2 and result.active is not None
    face = result.active
    assert 0 <= face.x and face.x + face.w <= info.width and 0 <= face.y and face.y + face.h <= info.height
    assert 60 <= face.w <= 200 and face.confidence > 0.9  # a frontal face filling a good part of a 360x288 frame


def test_no_face_in_the_green_screen_video(media):
    video = local_video(media / "noface_speech_autoeditor_example.mp4")
    result = detect_faces(video, probe(video.path), Segment(video.video_id, 0, 0, 2.0, 12.0), FaceConfig())
    assert result.frames_analysed == 10 and result.active is None


def found_faces(found: list[list[dict]]) -> list[list[tuple]]:
    """(box, confidence) of each detection, frame by frame: what two runs of MTCNN are compared on."""
    return [[(d["box"], d["confidence"]) for d in frame] for frame in found]


def test_the_opencv_pyramid_gives_the_same_faces_as_tensorflows(media, monkeypatch):
    """The faster pyramid (tasks.faces_mtcnn.area_pyramid) must not change what MTCNN finds."""
    import mtcnn.stages.stage_pnet as stage_pnet
    from mtcnn.utils.images import apply_scales
    from tasks.faces_decoding import decode_frames_at
    from tasks.faces_mtcnn import get_detector

    detector = get_detector()
    assert stage_pnet.apply_scales is not apply_scales  # the swap is in place
    frames = [rgb for _, rgb in decode_frames_at(str(media / "av_grid_lwbsza.mpg"), [0.5, 1.5, 2.5], (180, 144))]
    frames += [rgb[:144, :180] for _, rgb in decode_frames_at(str(media / "noface_speech_autoeditor_example.mp4"),
                                                             [3.0], (640, 360))]
    fast = detector.detect_faces(frames)
    monkeypatch.setattr(stage_pnet, "apply_scales", apply_scales)
    reference = detector.detect_faces(frames)
    assert sum(len(f) for f in reference) >= 3
    for got, want in zip(fast, reference):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert max(abs(p - q) for p, q in zip(a["box"], b["box"])) <= 1
            assert abs(a["confidence"] - b["confidence"]) < 1e-3


def test_padded_refinement_batches_give_the_same_faces(media, monkeypatch):
    """R-Net and O-Net on padded batches (tasks.faces_mtcnn.PaddedBatches) find exactly what they find unpadded."""
    from tasks.faces_decoding import decode_frames_at
    from tasks.faces_mtcnn import PaddedBatches, get_detector

    detector = get_detector()
    refinement = detector.stages[1:]
    assert refinement and all(isinstance(stage._model, PaddedBatches) for stage in refinement)
    frames = [rgb for _, rgb in decode_frames_at(str(media / "av_grid_lwbsza.mpg"), [0.5, 1.5, 2.5], (180, 144))]
    padded = detector.detect_faces(frames)
    for stage in refinement:
        monkeypatch.setattr(stage, "_model", stage._model.model)
    reference = detector.detect_faces(frames)
    assert sum(len(f) for f in reference) >= 3
    assert found_faces(padded) == found_faces(reference)


def test_compiled_networks_give_the_same_faces_as_eager_keras(media, monkeypatch):
    """P-Net, R-Net and O-Net run as tf.function graphs (tasks.faces_mtcnn.compile_stage_networks) and find
    exactly what the eager Keras models find."""
    from tasks.faces_decoding import decode_frames_at
    from tasks.faces_mtcnn import PaddedBatches, get_detector

    detector = get_detector()
    batches = [[rgb for _, rgb in decode_frames_at(str(media / name), times, size)] for name, times, size in [
        ("av_grid_swiz3n.mpg", [0.3, 1.3, 2.3], (180, 144)),
        ("face_nospeech_liveportrait_d18.mp4", [0.2, 1.2, 2.2], (256, 256))]]

    # (object holding a network, the attribute holding it) for each stage
    holders = [(s._model, "model") if isinstance(s._model, PaddedBatches) else (s, "_model") for s in detector.stages]
    compiled = [getattr(owner, name) for owner, name in holders]
    assert all(hasattr(fn, "python_function") for fn in compiled)
    graph_faces = [f for frames in batches for f in detector.detect_faces(frames)]
    for (owner, name), fn in zip(holders, compiled):
        monkeypatch.setattr(owner, name, fn.python_function)
    eager_faces = [f for frames in batches for f in detector.detect_faces(frames)]
    assert sum(len(f) for f in eager_faces[:3]) >= 3 and sum(len(f) for f in eager_faces[3:]) >= 3
    assert found_faces(graph_faces) == found_faces(eager_faces)


def test_the_batch_size_does_not_change_the_faces(media):
    """faces.batch_size is a speed and memory knob only: each frame's faces are the same whether it is
    analysed alone or in a batch of 2, 4 or 8 (TensorFlow's kernels differ by batch shape)."""
    from tasks.faces_decoding import decode_frames_at
    from tasks.faces_mtcnn import detect_in_frames

    frames = [rgb for name in ("av_grid_swiz3n.mpg", "av_grid_lwbsza.mpg")
              for _, rgb in decode_frames_at(str(media / name), [0.3, 0.9, 1.5, 2.1], (180, 144))]
    by_batch = {size: found_faces([f for k in range(0, len(frames), size)
                                   for f in detect_in_frames(frames[k:k + size], FaceConfig())])
                for size in (1, 2, 4, 8)}
    assert sum(len(f) for f in by_batch[1]) >= len(frames)
    assert by_batch[2] == by_batch[1] and by_batch[4] == by_batch[1] and by_batch[8] == by_batch[1]


def _h264_with_a_gap(media, out):
    """A GRID clip re-encoded with B-frames no frame refers to, and a 1.5 s gap before a B-frame."""
    from modalink.ffmpeg_tools import ffmpeg

    ffmpeg("-i", str(media / "av_grid_lwbsza.mpg"), "-an", "-vf", "setpts='PTS+if(gte(N,41),1.5/TB,0)'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-x264-params", "bframes=3:b-adapt=0:b-pyramid=none:scenecut=0",
           str(out))
    return out


@pytest.mark.parametrize("name, times", [
    ("av_grid_bbaf2n.mpg", [0.013, 0.72, 1.43, 2.14, 2.85]),  # MPEG-1 with B-frames
    ("face_nospeech_liveportrait_d18.mp4", [round(0.05 + 0.7 * k, 3) for k in range(11)]),
    ("noface_speech_autoeditor_example.mp4", [0.5, 0.52, 3.0, 14.0, 14.9]),  # two times on one frame; a seek
    ("noface_music_bigbuckbunny_0_30.webm", [1.0, 2.0, 12.0]),
    ("gap", [0.5, 1.0, 1.7, 2.0, 2.5, 3.3]),  # 1.7-2.5 fall in the gap: a skipped B-frame is the answer
    ("gap", [round(0.05 * k, 3) for k in range(88)]),  # every frame near a time: nothing skipped
])
def test_skipping_unused_frames_returns_the_same_frames(media, tmp_path, name, times):
    import numpy as np

    from tasks.faces_decoding import decode_frames_at

    path = _h264_with_a_gap(media, tmp_path / "gap.mp4") if name == "gap" else media / name
    full = list(decode_frames_at(str(path), times, (160, 128), skip_unused=False))
    skipping = list(decode_frames_at(str(path), times, (160, 128)))
    assert [k for k, _ in full] == list(range(len(times)))
    assert [k for k, _ in skipping] == [k for k, _ in full]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(full, skipping))


@pytest.mark.parametrize("name, filtered", [
    ("face_nospeech_liveportrait_d18.mp4", True),  # H.264: its deblocking filter is skipped
    ("av_grid_bbaf2n.mpg", False),  # MPEG-1 has no such filter: the same pixels
])
def test_frames_decoded_without_deblocking_are_the_same_frames_within_a_few_grey_levels(media, name, filtered):
    import numpy as np

    from tasks.faces_decoding import decode_frames_at

    times = [0.5, 1.5, 2.5]
    exact = list(decode_frames_at(str(media / name), times, (160, 128)))
    fast = list(decode_frames_at(str(media / name), times, (160, 128), deblock=False))
    assert [k for k, _ in fast] == [k for k, _ in exact] == [0, 1, 2]
    differences = [np.abs(a.astype(int) - b.astype(int)) for (_, a), (_, b) in zip(exact, fast)]
    assert all(d.mean() < 1.0 for d in differences), [d.mean() for d in differences]
    assert any(d.max() > 0 for d in differences) == filtered


def test_float32_batches_give_the_same_faces_as_float64(media, monkeypatch):
    """mtcnn normalises a batch in float64; tasks.faces_mtcnn.float32_batch does it in float32, exactly."""
    import mtcnn.mtcnn as detector_module
    import numpy as np
    from mtcnn.utils.images import standarize_batch
    from tasks.faces_decoding import decode_frames_at
    from tasks.faces_mtcnn import float32_batch, get_detector

    detector = get_detector()
    assert detector_module.standarize_batch is float32_batch
    frames = [rgb for _, rgb in decode_frames_at(str(media / "av_grid_bbaf2n.mpg"), [0.4, 1.4, 2.4], (180, 144))]
    ours, reference = float32_batch(frames)[0], standarize_batch(frames)[0]
    assert ours.dtype == np.float32 and np.array_equal(ours, reference.astype(np.float32))
    fast = detector.detect_faces(frames)
    monkeypatch.setattr(detector_module, "standarize_batch", standarize_batch)
    slow = detector.detect_faces(frames)
    assert sum(len(f) for f in slow) >= 3
    assert found_faces(fast) == found_faces(slow)


def test_yuface_detects_on_one_openmp_thread_in_each_calling_thread_only(media):
    """`faces_yuface.detect_in_frames` sets yuface's libgomp to one thread for the thread that calls it
    (here one that had asked OpenMP for 3), finding the faces it finds on 3; a thread started after
    that keeps the process's default."""
    import threading

    from threadpoolctl import ThreadpoolController

    from tasks import faces_yuface
    from tasks.faces_decoding import decode_frames_at

    faces_yuface.get_detector()
    openmp = [lib for lib in ThreadpoolController().select(user_api="openmp").lib_controllers
              if "yuface" in lib.filepath]
    assert len(openmp) == 1, "the yuface wheel ships its own libgomp"
    openmp = openmp[0]
    path = str(media / "av_grid_bbaf2n.mpg")
    info = probe(path)
    frames = [rgb for _, rgb in decode_frames_at(path, [0.5, 1.5], scaled_size(info.width, info.height, 0.5))]
    config = FaceConfig(detector="yuface")
    seen = {}

    def in_a_new_thread(work) -> None:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    def default() -> None:
        seen.setdefault("default", []).append(openmp.num_threads)

    def detect() -> None:
        openmp.set_num_threads(3)
        on_three = [faces_yuface.detect_in_frame(frame, config) for frame in frames]
        threads_then = openmp.num_threads
        on_one = faces_yuface.detect_in_frames(frames, config)
        seen["detect"] = (threads_then, openmp.num_threads, on_three, on_one)

    for work in (default, detect, default):
        in_a_new_thread(work)
    threads_then, threads_after, on_three, on_one = seen["detect"]
    assert (threads_then, threads_after) == (3, 1)
    assert seen["default"][0] == seen["default"][1]
    assert on_one == on_three and all(len(faces) == 1 for faces in on_one)
