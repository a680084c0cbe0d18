"""End-to-end: `python -m infer.demo` on the bundled portrait and speech."""

import json

import numpy as np
import pytest

from infer import demo, media


def test_demo_writes_video_with_audio_sheet_and_summary(tmp_path):
  demo.main(["--out", str(tmp_path), "--max-seconds", "1.2", "--size", "128"])
  summary = json.loads((tmp_path / "summary.json").read_text())
  frames, fps = media.read_video(tmp_path / "demo.mp4")
  assert fps == 25 and frames.shape == (summary["frames"], 128, 128, 3) and summary["frames"] == 30
  import av
  with av.open(str(tmp_path / "demo.mp4")) as c:
    kinds = sorted((s.type, s.codec_context.name) for s in c.streams)
  assert kinds == [("audio", "aac"), ("video", "h264")]
  audio = media.read_audio(tmp_path / "demo.mp4")
  assert abs(len(audio) / 16000 - 1.2) < 0.15  # muxed speech, trimmed to the video
  assert float(np.abs(audio).max()) > 0.1
  sheet = media.read_image(tmp_path / "contact_sheet.png")
  assert sheet.shape == (128, 8 * 128, 3)
  # The frames move: the head sways, so consecutive frames differ.
  assert np.abs(frames[1:].astype(int) - frames[:-1]).mean() > 0.1


def _mouth_motion(tmp_path, audio, sway):
  import shutil
  wav = tmp_path / "a.wav"
  src = tmp_path / "a_src.mp4"
  media.write_video(src, [np.zeros((16, 16, 3), np.uint8)] * 25, 25, audio=audio)
  shutil.move(src, wav.with_suffix(".mp4"))
  out = tmp_path / f"out_{sway}_{float(np.abs(audio).max()):.2f}"
  demo.run(demo.ASSETS / "portrait.jpg", wav.with_suffix(".mp4"), out, size=96, sway=sway)
  frames, _ = media.read_video(out / "demo.mp4")
  mouth = frames[:, 60:90, 30:66].astype(np.float32)  # lower-centre region of the crop
  return float(np.abs(mouth - mouth[:1]).mean())


def test_silence_keeps_a_still_face_and_speech_moves_the_mouth(tmp_path):
  sr = 16000
  t = np.arange(sr) / sr
  silence = np.zeros(sr, np.float32)
  # Syllable-like bursts: 200 Hz tone gated at 4 Hz.
  speech = (0.5 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)
  still = _mouth_motion(tmp_path, silence, sway=0.0)
  moving = _mouth_motion(tmp_path, speech, sway=0.0)
  assert still < 1.0  # only codec noise
  assert moving > 3 * still + 1.0


def test_envelope_is_zero_for_silence_and_follows_loudness():
  env = demo.loudness_envelope(np.zeros(16000, np.float32), 25)
  assert env.shape == (25,) and float(env.max()) == 0.0
  loud = np.concatenate([np.zeros(8000), 0.5 * np.ones(8000)]).astype(np.float32)
  env = demo.loudness_envelope(loud, 25)
  assert env[:10].max() == 0 and env[15:].min() > 0.9


def test_bad_inputs_give_clear_errors(tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(media.MediaError, match="cannot read image"):
    media.read_image(bad)
  with pytest.raises(media.MediaError, match="not found"):
    media.read_audio(tmp_path / "missing.wav")
  junk = tmp_path / "junk.wav"
  junk.write_bytes(b"\x00\x01garbage" * 100)
  with pytest.raises(media.MediaError):
    media.read_audio(junk)
  with pytest.raises(SystemExit, match="error: image not found"):
    demo.main(["--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")])
