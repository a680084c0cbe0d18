import numpy as np

from benchmarks import preprocess_bench
from data import annotate, preprocess
from tests.helpers import media_dir, require


def test_tile_frames_ping_pong():
  pts = np.arange(3, dtype=np.float32)[:, None, None] * np.ones((1, 478, 3), np.float32)
  out = preprocess_bench.tile_frames(pts, 8)
  assert out.shape == (8, 478, 3)
  np.testing.assert_array_equal(out[:, 0, 0], [0, 1, 2, 2, 1, 0, 0, 1])


def test_fit_timing_on_real_face_points():
  require(media_dir() / "videos", "shared media videos (CHATANYONE_MEDIA_DIR)")
  faces = preprocess_bench.face_points_from_video(num_frames=16)
  assert faces.shape[1:] == (478, 3) and faces.shape[0] >= 12
  ann = annotate.Annotator(preprocess.PreprocessConfig(body_size=(192, 128), head_size=128))
  (t,) = preprocess_bench.time_fit(ann, faces, (64,), iters=2)
  assert t.compile_s > 0 and len(t.times_s) == 2 and t.median_ms > 0 and "ms/frame" in t.throughput
  assert "T=64" in t.config


def test_stage_breakdown_adds_up():
  times = preprocess_bench.StageTimes()
  for name, s in (("mediapipe face", 2.0), ("mediapipe pose", 1.0),
                  ("landmarks total (extract_landmarks)", 3.5), ("annotate total (annotate_clip)", 2.0),
                  ("template fit (jitted fit_clip)", 0.5),
                  ("records.build (TFDS ArrayRecord, clips + frames)", 1.0)):
    times.add(name, s)
  stages = preprocess_bench.derived_stages(times, process_s=6.0)
  assert stages["landmarks other (tracking, copies)"] == 0.5
  assert stages["annotate other (coordinates, numpy)"] == 1.5
  assert stages["process_video other"] == 0.5
  assert sum(v for k, v in stages.items() if not k.startswith("records")) == 6.0
