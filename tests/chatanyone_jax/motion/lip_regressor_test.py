"""The lip regressor and the mouth blend (`chatanyone_jax.motion.lip_regressor`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import template as tp
from chatanyone_jax.audio import whisper
from chatanyone_jax.motion.lip_regressor import (
  MOUTH_KEYPOINTS,
  LipRegressor,
  blend_mouth,
  mouth_blend_matrix,
  predict_exp,
)


def test_mouth_blend_takes_the_mouth_from_one_expression_and_the_rest_from_the_other():
  template = tp.load_head_template()
  matrix = mouth_blend_matrix(template)
  assert matrix.shape == (tp.NUM_EXP, tp.NUM_EXP) and matrix.dtype == np.float32
  rng = np.random.default_rng(0)
  sampled, lip = rng.normal(size=(200, tp.NUM_EXP)), rng.normal(size=(200, tp.NUM_EXP))
  blended = np.asarray(blend_mouth(jnp.asarray(sampled), jnp.asarray(lip), jnp.asarray(matrix)))
  np.testing.assert_allclose(np.asarray(blend_mouth(sampled, sampled, matrix)), sampled, atol=1e-5)
  basis = np.asarray(template.exp_basis)[:, np.asarray(template.keypoint_indices)]  # (52, 32, 3)
  kp = lambda e: np.einsum("na,aki->nki", e, basis)
  names = [n for n, _ in tp.KEYPOINT_NAMES]
  mouth = np.asarray([n in MOUTH_KEYPOINTS for n in names])
  assert mouth.sum() == 15 and mouth[names.index("upper_lip_inner")] and not mouth[names.index("nose_tip")]
  gap = lambda a, b, sel: np.linalg.norm(kp(a)[:, sel] - kp(b)[:, sel])
  # The mouth keypoints follow `lip` (within about 10 % of where they started), the others stay near
  # `sampled` (two unrelated random expressions: the hardest case; real ones differ mostly in the mouth).
  assert gap(blended, lip, mouth) < 0.12 * gap(sampled, lip, mouth)
  assert gap(blended, sampled, ~mouth) < 0.25 * gap(sampled, lip, ~mouth)
  opening = lambda e: np.asarray(tp.mouth_opening(template, e))
  assert np.corrcoef(opening(blended), opening(lip))[0, 1] > 0.99
  assert np.corrcoef(opening(blended), opening(sampled))[0, 1] < 0.3
  with pytest.raises(ValueError, match="unknown head keypoints"):
    mouth_blend_matrix(template, mouth=("mouth_right", "ear"))


@pytest.mark.parametrize("hidden", [0, 8])
def test_lip_regressor_reads_context_frames_on_each_side(hidden):
  model = LipRegressor(context=2, hidden=hidden)
  x = jax.random.normal(jax.random.key(0), (2, 20, 6))
  params = model.init(jax.random.key(1), x)["params"]
  assert set(params) == ({"conv", "out"} if hidden else {"conv"})
  y = model.apply({"params": params}, x)
  assert y.shape == (2, 20, tp.NUM_EXP)
  changed = np.abs(np.asarray(model.apply({"params": params}, x.at[:, 10].add(1.0)) - y)).max(axis=(0, 2))
  assert (changed[8:13] > 0).all() and not changed[:8].any() and not changed[13:].any()
  # predict_exp: 50-Hz features -> frames, standardised, regressed, de-normalised.
  norm = {"feature_mean": jnp.full((6,), 0.5), "feature_std": jnp.full((6,), 2.0),
          "exp_mean": jnp.full((tp.NUM_EXP,), 1.0), "exp_std": jnp.full((tp.NUM_EXP,), 3.0)}
  features = jax.random.normal(jax.random.key(2), (2, 33, 6))  # 0.66 s at 50 Hz = 20 frames at 30 fps
  out = predict_exp(model, params, features, 30.0, 20, norm)
  frames = (whisper.features_to_frames(features, 30.0, 20) - 0.5) / 2.0
  np.testing.assert_allclose(np.asarray(out), np.asarray(model.apply({"params": params}, frames) * 3.0 + 1.0),
                             atol=1e-5)


@pytest.mark.parametrize("hidden", [0, 8])
def test_gate_eases_into_the_rest_expression_where_it_hears_no_speech(hidden):
  """gate: the map's last output s, clipped to [0, 1], mixes the rest expression (s = 0) and the regressed
  one (s = 1): rest + s · (y - rest)."""
  model = LipRegressor(context=1, hidden=hidden, gate=True, out_dim=5)
  x = 4.0 * jax.random.normal(jax.random.key(0), (2, 9, 7))
  params = model.init(jax.random.key(1), x)["params"]
  assert params["rest"].shape == (5,)
  plain = LipRegressor(context=1, hidden=hidden, out_dim=6)  # the same map, the gate as a 6th output
  h = plain.apply({"params": {k: v for k, v in params.items() if k != "rest"}}, x)
  rest = jnp.arange(5.0)
  out = model.apply({"params": {**params, "rest": rest}}, x)
  s = np.clip(np.asarray(h[..., 5:]), 0, 1)
  assert (s == 0).any() and (s == 1).any() and ((s > 0) & (s < 1)).any()  # every case of the clip
  np.testing.assert_allclose(np.asarray(out), np.asarray(rest + s * (h[..., :5] - rest)), atol=1e-5)
