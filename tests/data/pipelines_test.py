"""Padded motion windows of short clips (`data.pipelines.MotionWindowConfig.short_min_frames`) and how the
face-motion task uses their validity mask (synthetic records: no annotation is tested here)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import lookahead, pipelines, records, silence
from tests import fixtures
from train import tasks
from train.configs import motion_body, motion_face

# 60 frames: whole windows; 22 (T <= n < T + H): one window ending at the clip's end, history cut short;
# 14 (< T): one window from frame 0 with no history; 8: shorter than short_min_frames, left out.
LENGTHS = (60, 22, 14, 8)
CFG = pipelines.MotionWindowConfig(window=20, history=5, stride=5, short_min_frames=10)


@pytest.fixture(scope="module")
def short_records(tmp_path_factory):
  out = tmp_path_factory.mktemp("short_records")
  fixtures.write_records(out, num_clips=4, num_frames=LENGTHS, body_size=(96, 64), head_size=64, hands=False)
  return out


def test_index_has_one_padded_window_per_short_clip():
  rows = pipelines.WindowIndex(LENGTHS, CFG).rows.tolist()
  assert rows == [[0, s] for s in range(0, 36, 5)] + [[1, -3], [2, -5]]
  assert len(pipelines.WindowIndex(LENGTHS, CFG.__class__(window=20, history=5, stride=5))) == 8
  with pytest.raises(ValueError, match="short_min_frames"):
    pipelines.WindowIndex([8, 14], CFG.__class__(window=20, history=5))


def test_padded_windows_repeat_edge_frames_with_silence_and_a_mask(short_records):
  loader = pipelines.motion_windows(short_records, batch_size=1, config=CFG, shuffle=False, num_epochs=1)
  wins = {int(b["clip_index"][0]): jax.tree.map(lambda x: x[0], b) for b in loader}
  assert sorted(wins) == [0, 1, 2]  # clip 3 is too short
  clips = records.data_source(short_records, "clips")
  spf = 16000 / 30
  for c, start in ((1, -3), (2, -5)):
    w, clip, n = wins[c], clips[c], LENGTHS[c]
    assert int(w["start"]) == start
    frames = np.arange(start, start + 25)
    inside = (frames >= 0) & (frames < n)
    np.testing.assert_array_equal(w["valid"], inside)
    np.testing.assert_array_equal(w["exp"], clip["exp"][np.clip(frames, 0, n - 1)])
    a0 = round(-start * spf)  # the clip's audio begins after the padded history
    np.testing.assert_array_equal(w["audio"][:a0], 0)
    got = w["audio"][a0:a0 + 1000]
    np.testing.assert_allclose(got, clip["audio"][:got.size] / 32768.0)
    assert bool(w["ref_valid"]) == (n >= 20)
  whole = wins[0]
  assert whole["valid"].all() and bool(whole["ref_valid"])


def test_silence_augmentation_quiets_a_span_and_closes_the_mouth(short_records):
  """silence_prob 1: each window's fixed span (inside the generated T frames) is faint noise and its
  expression eases into the clip's most closed mouth and back; pose, history and the rest are untouched."""
  from chatanyone_jax import template as tp

  plain = pipelines.motion_windows(short_records, batch_size=1, config=CFG, shuffle=False, num_epochs=1)
  quiet = pipelines.motion_windows(short_records, batch_size=1, config=CFG, shuffle=False, num_epochs=1,
                                   silence_prob=1.0)
  clips = records.data_source(short_records, "clips")
  gap = silence.LipGap()
  spans = set()
  for row, (p, q) in enumerate(zip(plain, quiet, strict=True)):
    p, q = jax.tree.map(lambda x: x[0], p), jax.tree.map(lambda x: x[0], q)
    assert bool(q["silenced"]) and not bool(p["silenced"])
    a, b = silence.silence_span(row, CFG)
    spans.add((a, b))
    assert CFG.history <= a and b <= CFG.length and 12 <= b - a <= 20
    clip = clips[int(p["clip_index"])]
    np.testing.assert_allclose(gap(clip["exp"], clip["identity"]),  # the NumPy gap is the template's
                               tp.mouth_opening(tp.load_head_template(), clip["exp"], clip["identity"]),
                               rtol=1e-4, atol=1e-6)
    closed = clip["exp"][np.argmin(gap(clip["exp"], clip["identity"]))]
    inside = np.zeros(CFG.length, bool)
    inside[a:b] = True
    np.testing.assert_array_equal(q["exp"][~inside], p["exp"][~inside])
    np.testing.assert_allclose(q["exp"][a + 2], closed, atol=1e-6)  # closed after the ramp
    np.testing.assert_allclose(q["exp"][a], p["exp"][a] + (closed - p["exp"][a]) / 3, atol=1e-5)
    # "silence" is the easing weight: the target is exp + silence · (closed - exp) on every frame
    np.testing.assert_allclose(q["exp"], p["exp"] + q["silence"][:, None] * (closed - p["exp"]), atol=1e-5)
    assert q["silence"][a + 2] == 1.0 and not q["silence"][~inside].any() and not p["silence"].any()
    np.testing.assert_array_equal(q["pose"], p["pose"])
    np.testing.assert_array_equal(q["motion"][:, :tp.NUM_EXP], q["exp"])
    spf = 16000 / 30
    lo, hi = round(a * spf), round(b * spf)
    np.testing.assert_array_equal(q["audio"][:lo], p["audio"][:lo])
    np.testing.assert_array_equal(q["audio"][hi:], p["audio"][hi:])
    rms = np.sqrt(np.mean(q["audio"][lo:hi] ** 2))
    assert 10 ** (-76 / 20) < rms < 10 ** (-49 / 20)
  assert len(spans) > 1  # one span per row, not one for all
  with pytest.raises(ValueError, match="silenced"):
    pipelines.motion_windows(short_records, batch_size=1, config=CFG, silence_prob=0.5,
                             speech_features="x.npy")


def test_lookahead_augmentation_cuts_the_audio_and_marks_the_unheard_frames(short_records):
  """lookahead_prob 1: each window's audio is zeros from its fixed cut on (frame H + c of the row, as the
  stream's audio after hop + L) and audio_valid marks its first c frames; motion and the rest untouched."""
  plain = pipelines.motion_windows(short_records, batch_size=1, config=CFG, shuffle=False, num_epochs=1)
  ahead = pipelines.motion_windows(short_records, batch_size=1, config=CFG, shuffle=False, num_epochs=1,
                                   lookahead_prob=1.0)
  spf = 16000 / 30
  cuts = set()
  for row, (p, q) in enumerate(zip(plain, ahead, strict=True)):
    p, q = jax.tree.map(lambda x: x[0], p), jax.tree.map(lambda x: x[0], q)
    c = lookahead.lookahead_cut(row, CFG)
    cuts.add(c)
    assert lookahead.KNOWN_FRAMES[0] <= c < CFG.window and not bool(q["silenced"])
    np.testing.assert_array_equal(q["audio_valid"], np.arange(CFG.window) < c)
    assert p["audio_valid"].all()
    lo = round((CFG.history + c) * spf)
    np.testing.assert_array_equal(q["audio"][:lo], p["audio"][:lo])
    assert not q["audio"][lo:].any() and q["audio"].size == p["audio"].size
    for key in ("motion", "exp", "pose", "valid", "ref_motion"):
      np.testing.assert_array_equal(q[key], p[key])
  assert len(cuts) > 1  # one cut per row, not one for all
  # Silence and look-ahead never meet in one window: a silenced window is heard to its end.
  both = pipelines.motion_windows(short_records, batch_size=9, config=CFG, shuffle=False, num_epochs=1,
                                  silence_prob=0.5, lookahead_prob=1.0)
  b = next(iter(both))
  assert b["silenced"].any() and not b["silenced"].all()
  np.testing.assert_array_equal(b["audio_valid"].all(1), b["silenced"])
  with pytest.raises(ValueError, match="lookahead_prob > 0 with cached speech features"):
    pipelines.motion_windows(short_records, batch_size=1, config=CFG, lookahead_prob=0.5,
                             speech_features="x.npy")


def test_face_task_masks_padding_and_nulls_padded_history_and_reference(short_records):
  c = motion_face.get_config("tiny")
  c.data_dir = str(short_records)
  c.window, c.history, c.stride, c.short_min_frames = 20, 5, 5, 10
  task = tasks.get_task(c)
  loader = pipelines.motion_windows(short_records, batch_size=5, config=CFG, shuffle=False, num_epochs=1)
  batch = [b for b in loader][-1]  # clip 0's last three windows and the two padded ones
  assert batch["start"].tolist() == [25, 30, 35, -3, -5]
  model_batch = task.adapt(batch)
  assert {k: v.shape for k, v in model_batch.items()} == {k: s.shape for k, s in task.batch_spec(5).items()}
  norm = task.norm_stats([model_batch])
  assert np.isfinite(norm["motion_mean"]).all()
  mb = task.model_batch(jax.tree.map(jnp.asarray, model_batch), jax.random.key(0), norm, train=False)
  np.testing.assert_array_equal(mb["mask"], batch["valid"][:, 5:])
  assert mb["mask"][:4].all() and int(mb["mask"][4].sum()) == 14
  assert mb["history_valid"].tolist() == [True, True, True, False, False]
  assert mb["reference_valid"].tolist() == [True, True, True, True, False]
  # Training adds a random gain (up to ± audio_gain_db = 6 dB): a shift of the whole window's log-mel.
  assert c.audio_gain_db == 6.0
  trained = task.model_batch(jax.tree.map(jnp.asarray, model_batch), jax.random.key(1), norm, train=True)
  shift = np.asarray(trained["mel"][0] - mb["mel"][0])
  loud = np.asarray(mb["mel"][0]) > np.log(1e-5) + 3  # above the log floor
  assert 0.01 < abs(np.median(shift[loud])) <= 1.4 and np.std(shift[loud]) < 0.05
  assert trained["mask"].tolist() == mb["mask"].tolist()  # the padding stays masked


def test_body_task_refuses_padded_windows():
  c = motion_body.get_config("tiny")
  c.short_min_frames = 10
  with pytest.raises(ValueError, match="whole windows only"):
    tasks.get_task(c)


def test_loaders_read_a_few_batches_ahead_not_grains_500_records(short_records):
  """Each new iterator reads at most `read_ahead_batches` batches of records ahead of the batch it builds
  (grain's default read 500 at once, whatever the run went on to use), and the batches are the same."""
  reads = []

  class Counting:
    def __init__(self, n):
      self.n = n

    def __len__(self):
      return self.n

    def __getitem__(self, i):
      reads.append(i)
      return np.full((2,), i, np.int32)

  loader = pipelines.make_loader(Counting(1000), [], batch_size=4, seed=0, read_ahead_batches=2)
  assert loader._read_options.prefetch_buffer_size == 8 and 1 <= loader._read_options.num_threads <= 8
  it = iter(loader)
  first = [next(it) for _ in range(3)]
  assert len(reads) <= 3 * 4 + 8 + 4, len(reads)  # the 12 used, 8 ahead, a batch in flight at most
  again = iter(pipelines.make_loader(Counting(1000), [], batch_size=4, seed=0))
  for a in first:
    np.testing.assert_array_equal(a, next(again))
  with pytest.raises(ValueError, match="read_ahead_batches"):
    pipelines.make_loader(Counting(10), [], batch_size=4, seed=0, read_ahead_batches=0)
  # The real pipelines go through it: a motion-window loader's options are bounded too.
  windows = pipelines.motion_windows(short_records, batch_size=2, config=CFG, shuffle=False, num_epochs=1)
  assert windows._read_options.prefetch_buffer_size == 2 * pipelines.READ_AHEAD_BATCHES
