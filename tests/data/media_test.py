"""Media reading: audio resampled to mono at the requested rate, clear errors."""

import av
import numpy as np
import pytest

from data.media import MediaError, read_audio, read_image, read_video


def test_audio_resampled_to_16k_mono(tmp_path):
  sr = 44100
  t = np.arange(sr // 2) / sr
  stereo_tone = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
  path = tmp_path / "tone.wav"
  with av.open(str(path), "w") as c:
    s = c.add_stream("pcm_s16le", rate=sr)
    s.layout = "stereo"
    pcm = (np.stack([stereo_tone, stereo_tone]) * 32767).astype(np.int16).reshape(1, -1, order="F")
    f = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
    f.sample_rate = sr
    for p in s.encode(f):
      c.mux(p)
    for p in s.encode():
      c.mux(p)
  a = read_audio(path, 16000)
  assert abs(len(a) - 8000) <= 64
  spec = np.abs(np.fft.rfft(a[1000:7000]))
  peak_hz = np.argmax(spec) * 16000 / 6000
  assert abs(peak_hz - 440) < 5
  assert 0.25 < np.abs(a[1000:7000]).max() < 0.35


def test_missing_and_unreadable_files_raise_media_error(tmp_path):
  with pytest.raises(MediaError, match="not found"):
    read_image(tmp_path / "missing.png")
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  with pytest.raises(MediaError, match="PNG or JPEG"):
    read_image(bad)
  with pytest.raises(MediaError, match="not found"):
    read_audio(tmp_path / "missing.wav")
  with pytest.raises(MediaError, match="not found"):
    read_video(tmp_path / "missing.mp4")
