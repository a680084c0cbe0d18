import numpy as np
import pytest

from benchmarks import body_motion


def test_scores_see_jitter_and_spread():
  """A smooth trajectory scores jitter 1 against itself; the same with per-frame noise scores far more."""
  t = np.linspace(0, 1, 40)
  true = np.broadcast_to(np.stack([np.sin(6 * t), np.cos(6 * t), t], -1)[None, :, None], (2, 40, 5, 3))
  same = body_motion.motion_scores(true, true)
  assert same["jitter_ratio"] == pytest.approx(1.0) and same["mae"] == 0.0
  assert same["motion_std"] == pytest.approx(same["motion_std_true"])
  noisy = true + 0.5 * np.random.default_rng(0).normal(size=true.shape)
  jittery = body_motion.motion_scores(noisy, true)
  assert jittery["jitter_ratio"] > 5 and jittery["motion_std"] > jittery["motion_std_true"]
  assert jittery["mae"] > 0.5


@pytest.mark.xdist_group("demo")
def test_cli_scores_the_demo_body_model(demo_run, capsys):
  """The demo's tiny body model on its own clip (the demo's records have a train split only)."""
  body = demo_run / "runs" / "motion_body"
  assert body_motion.main(["--data", str(demo_run / "data"), "--workdir", str(body), "--split", "train",
                           "--max-windows", "2", "--num-steps", "2"]) == 0
  out = capsys.readouterr().out
  assert "| model | prediction |" in out and "motion_body | epsilon |" in out
  with pytest.raises(ValueError, match="not motion_body"):
    body_motion.evaluate(demo_run / "runs" / "motion_face", demo_run / "data", "train")
