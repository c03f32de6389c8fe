"""A step's cache key depends only on the options that can change its result: each option is
changed once and the keys of every cached step are compared (the table says which must move)."""
import dataclasses

import pytest

from modalink.config import Config, Section
from modalink.records import MediaInfo, Segment, SegmentFiles, Span, Video
from modalink.stages import SegmentInput, discover, segment_stages
from tasks.audio import ExtractedAudio, extract_audio_task
from tasks.base import stage_task
from tasks.probe import probe_task
from tasks.speakers import split_speakers_task
from tasks.vad import detect_speech_task

# Which cached steps read each section (beside the options the flow gives them, nothing else).
READERS = {
    "acquire": set(),  # downloads are not a cached step; finished videos are keyed by every option
    "audio": {"extract-audio", "speaker_face", "media", "transcription", "voice"},
    "vad": {"detect-speech"},
    "speakers": {"split-speakers"},
    "faces": {"faces"},
    "clips": {"media"},
    "asr": {"transcription"},
    "run": set(),
    "speaker_face": {"speaker_face"},
    "expressions": {"expressions"},
    "voice": {"voice"},
    "export": set(),  # the exports' options (splits, shards): no step reads them, and no finished video's key
}
discover()  # every stage's section (speaker_face's among them) before the configs below are made
VIDEO = Video("v-1234abcd", "v.mp4", "/data/v.mp4", "1234abcd")
AUDIO = ExtractedAudio("/staging/.modalink/work/v/audio.wav", 16000, 3.0, False)
MEDIA_INFO = MediaInfo(3.0, 360, 288, 25.0, "mpeg1video", "mp2", 44100, 2)
SEGMENT = Segment(VIDEO.video_id, 0, 0, 0.45, 2.22)


def step_keys(cfg: Config) -> dict[str, str]:
    """The cache key of every cached step for the same fixed inputs under `cfg`."""
    def key(task, **inputs):
        return task.cache_policy.compute_key(None, inputs, {})

    keys = {
        "probe": key(probe_task, video=VIDEO),
        "extract-audio": key(extract_audio_task, video=VIDEO, out_path=AUDIO.path, config=cfg.audio),
        "detect-speech": key(detect_speech_task, video=VIDEO, audio=AUDIO, config=cfg.vad),
        "split-speakers": key(split_speakers_task, video=VIDEO, audio=AUDIO, spans=(Span(0.45, 2.22),),
                              config=cfg.speakers),
    }
    item = SegmentInput(VIDEO, SEGMENT, MEDIA_INFO, AUDIO.path, "/staging")
    for stage in segment_stages():
        needed = {"media": SegmentFiles("c.mp4", "a.wav", "f.jpg")} if stage.needs else {}
        keys[stage.name] = key(stage_task(stage, cfg), stage_name=stage.name, work=[item] if stage.per_chunk else item,
                               options=stage.options(cfg), needed=needed,
                               key_sections={name: cfg.section(name) for name in stage.key_sections(cfg)})
    return keys


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, tuple):
        return value[:-1]
    return "x" if value is None else value + "-other"


def every_option(section: Section, path: str):
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, Section):
            yield from every_option(value, f"{path}.{f.name}")
        else:
            yield f"{path}.{f.name}", bool(f.metadata.get("runtime")), changed(value)


def with_option(cfg: Config, option: str, value) -> Config:
    names = option.split(".")
    def replace(section, names):
        if len(names) == 1:
            return dataclasses.replace(section, **{names[0]: value})
        return dataclasses.replace(section, **{names[0]: replace(getattr(section, names[0]), names[1:])})
    section = replace(cfg.section(names[0]), names[1:])
    if names[0] not in Config.CORE:  # a registered stage's own section
        return dataclasses.replace(cfg, added={**cfg.added, names[0]: section})
    return dataclasses.replace(cfg, **{names[0]: section})


def expected_readers(cfg: Config, option: str, runtime: bool) -> set[str]:
    section, *rest = option.split(".")
    if runtime:
        return set()
    if section == "asr" and len(rest) == 2 and rest[0] in cfg.asr.choices and rest[0] != cfg.asr.backend:
        return set()  # another backend's options change nothing
    return READERS[section]


BASES = {"google": Config(), "whisper": Config.load(overrides={"asr": {"backend": "whisper"}})}
CASES = [(base, option, runtime, value) for base, cfg in BASES.items()
         for name, section in cfg.sections().items() if name in READERS
         for option, runtime, value in every_option(section, name) if option != "asr.backend"]


@pytest.fixture(scope="module")
def base_keys():
    return {name: step_keys(cfg) for name, cfg in BASES.items()}


@pytest.mark.parametrize("base, option, runtime, value", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_changing_an_option_moves_only_the_keys_of_the_steps_that_read_it(base, option, runtime, value, base_keys):
    cfg = BASES[base]
    keys = step_keys(with_option(cfg, option, value))
    moved = {step for step, key in keys.items() if key != base_keys[base][step]}
    assert moved == expected_readers(cfg, option, runtime)


def test_the_backend_itself_moves_only_the_transcription(base_keys):
    keys = step_keys(BASES["whisper"])
    assert {step for step, key in keys.items() if key != base_keys["google"][step]} == {"transcription"}


def test_keys_do_not_depend_on_the_staging_folder(base_keys):
    cfg = BASES["google"]
    item = SegmentInput(VIDEO, SEGMENT, MEDIA_INFO, "/elsewhere/audio.wav", "/elsewhere")
    stage = segment_stages()[0]
    key = stage_task(stage, cfg).cache_policy.compute_key(
        None, {"stage_name": stage.name, "work": [item], "options": stage.options(cfg),
               "key_sections": {n: cfg.section(n) for n in stage.key_sections(cfg)}}, {})
    assert key == base_keys["google"][stage.name]


def test_a_later_stage_keys_the_speakers_face_crops_by_their_pixels(base_keys):
    """The expressions stage is keyed by speaker_face's crops as pixels: a crop made here (a view of a
    bigger array) and the same crop loaded from the cache give one key; other pixels another."""
    import pickle

    import numpy as np

    from tasks.speaker_face import SpeakerFace

    cfg, stage = BASES["google"], next(s for s in segment_stages() if s.name == "expressions")
    picture = np.arange(64 * 128, dtype=np.uint8).reshape(64, 128)
    made_here = picture[:, ::2]
    speaker = SpeakerFace("motion", "m", None, 0, 0.5, None, True, (), 3, None, (), face_crops=((1.0, made_here),))

    def key(result):
        item = SegmentInput(VIDEO, SEGMENT, MEDIA_INFO, AUDIO.path, "/staging", results={"speaker_face": result})
        return stage_task(stage, cfg).cache_policy.compute_key(
            None, {"stage_name": stage.name, "work": [item], "options": stage.options(cfg),
                   "key_sections": {n: cfg.section(n) for n in stage.key_sections(cfg)}}, {})

    assert not made_here.flags["C_CONTIGUOUS"]
    assert key(speaker) == key(pickle.loads(pickle.dumps(speaker)))
    other = dataclasses.replace(speaker, face_crops=((1.0, 255 - made_here),))
    assert key(other) != key(speaker)
