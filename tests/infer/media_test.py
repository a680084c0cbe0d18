"""Media I/O round trips."""

import numpy as np

from infer import media


def test_audio_resampled_to_16k_mono(tmp_path):
  sr = 44100
  t = np.arange(sr // 2) / sr
  stereo_tone = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
  import av
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
  a = media.read_audio(path, 16000)
  assert abs(len(a) - 8000) <= 64
  spec = np.abs(np.fft.rfft(a[1000:7000]))
  peak_hz = np.argmax(spec) * 16000 / 6000
  assert abs(peak_hz - 440) < 5
  assert 0.25 < np.abs(a[1000:7000]).max() < 0.35


def test_video_round_trip(tmp_path):
  yy, xx = np.mgrid[0:32, 0:48]
  base = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1).astype(np.uint8)[None]  # smooth colours
  frames = np.repeat(base, 10, 0)
  n = media.write_video(tmp_path / "v.mp4", iter(frames), 30)
  back, fps = media.read_video(tmp_path / "v.mp4")
  assert n == 10 and back.shape == frames.shape and fps == 30
  assert np.abs(back.astype(int) - frames).mean() < 4  # lossy h264, yuv420
