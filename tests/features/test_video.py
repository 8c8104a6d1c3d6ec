"""1-fps frames: picked by timestamp (nearest to s + 0.5 s), on synthetic and real TAU video."""

from fractions import Fraction

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from avsc.features import VideoError, extract_frames, video_info
from avsc.features.video import output_size
from tests.conftest import REALDATA
from tests.media import index_frame, read_index, write_indexed_video

TAU_VIDEO = REALDATA / "tau_av2021_video"


@pytest.mark.parametrize("fps", [24, 30])
def test_frames_nearest_to_segment_centres(tmp_path, fps):
    path = write_indexed_video(tmp_path / f"v{fps}.mp4", n_frames=10 * fps, fps=fps)
    frames = extract_frames(path, short_side=None)
    assert frames.shape == (10, 96, 160, 3) and frames.dtype == np.uint8
    got = [read_index(f) for f in frames]
    assert got == [round((s + 0.5) * fps) for s in range(10)]


def test_ties_go_to_the_earlier_frame(tmp_path):
    path = write_indexed_video(tmp_path / "v25.mp4", n_frames=100, fps=25)
    got = [read_index(f) for f in extract_frames(path, short_side=None)]
    assert got == [12 + 25 * s for s in range(4)]  # 12.5 -> 12


def test_variable_frame_timing_is_read_from_timestamps(tmp_path):
    """Irregular timestamps: the choice must follow pts, not frame count / nominal fps."""
    rng = np.random.default_rng(3)
    times_ms = np.cumsum(rng.integers(20, 90, size=120))  # 20-90 ms gaps, ~6 s
    times_ms -= times_ms[0]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 160, 96), format="rgb24")
            frame.pts = int(t)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    # read back the timestamps the container really holds
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        real = [(read_index(f.to_ndarray(format="rgb24")), float(f.time)) for f in c.decode(s)]
    idx, t = np.array([r[0] for r in real]), np.array([r[1] for r in real])
    n_seg = int(t[-1])  # whole seconds covered
    frames = extract_frames(path, short_side=None, segments=n_seg)
    expected = [int(idx[np.abs(t - (s + 0.5)).argmin()]) for s in range(n_seg)]
    assert [read_index(f) for f in frames] == expected


def test_resize_keeps_aspect_ratio(tmp_path):
    path = write_indexed_video(tmp_path / "v.mp4", n_frames=48, fps=24, size=(320, 180))
    frames = extract_frames(path, short_side=90)
    assert frames.shape == (2, 90, 160, 3)
    assert [read_index(f) for f in frames] == [12, 36]
    assert output_size(1280, 720, 320) == (569, 320)
    assert output_size(720, 1280, 320) == (320, 569)


def test_bad_videos_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        extract_frames(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(VideoError, match="junk.mp4"):
        extract_frames(junk)
    short = write_indexed_video(tmp_path / "short.mp4", n_frames=24, fps=24)
    with pytest.raises(VideoError, match="short.mp4.*too short"):
        extract_frames(short, segments=3)


def test_truncated_video_is_an_error(tmp_path):
    path = write_indexed_video(tmp_path / "full.mp4", n_frames=240, fps=24)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoError, match="cut.mp4"):
        extract_frames(cut, segments=10)


REAL = [
    ("barcelona161_4901.mp4", (1280, 720), "yuv420p"),
    ("helsinki164_5009.mp4", (1280, 720), "yuv420p"),
    ("lyon1045_40062_md.mp4", (400, 225), "yuv444p"),
    ("vienna176_5411_md.mp4", (400, 225), "yuv444p"),
]


@pytest.mark.realdata
@pytest.mark.parametrize("name,size,pix_fmt", REAL)
def test_real_tau_clips(name, size, pix_fmt):
    path = TAU_VIDEO / name
    if not path.is_file():
        pytest.skip("real TAU videos absent")
    info = video_info(path)
    assert (info.width, info.height) == size and info.pix_fmt == pix_fmt
    assert info.fps == 24 and info.duration == pytest.approx(10.0, abs=0.01)

    frames = extract_frames(path)  # default short side 320
    assert frames.shape == (10, 320, 569, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # real picture content, not a blank

    # Brute force: decode every frame, pick the nearest timestamp, compare at native size.
    native = extract_frames(path, short_side=None)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rgb = VideoReformatter()  # one converter for every frame (to_ndarray makes one each)
        decoded = [
            (float(f.time), rgb.reformat(f, format="rgb24").to_ndarray()) for f in c.decode(s)
        ]
    times = np.array([t for t, _ in decoded])
    for seg in range(10):
        ref = decoded[int(np.abs(times - (seg + 0.5)).argmin())][1]
        np.testing.assert_array_equal(native[seg], ref)


@pytest.mark.realdata
def test_real_single_keyframe_clip_has_one_keyframe():
    """The 1280x720 clips hold a single keyframe: extraction must decode sequentially."""
    path = TAU_VIDEO / "barcelona161_4901.mp4"
    if not path.is_file():
        pytest.skip("real TAU videos absent")
    with av.open(str(path)) as c:
        keys = sum(p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size)
    assert keys == 1
    frames = extract_frames(path, short_side=None)
    assert not np.array_equal(frames[0], frames[9])
