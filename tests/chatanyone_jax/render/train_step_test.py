"""The renderer GAN train step: one compile, donation, metrics, and overfitting 2 real frames.

One module fixture builds the `tiny` state, compiles the step once (with every loss on) and trains it
on a real self-reenactment pair until the reconstruction L1 halves; the tests assert on what it saw.
"""

from __future__ import annotations

import dataclasses
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chatanyone_jax import losses
from chatanyone_jax.render import presets, train_step
from data.media import read_video
from tests.helpers import media_dir, require

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

VIDEO = "videos/LivePortrait__assets_examples_driving_d0.mp4"
MAX_STEPS = 80
# `tiny` with one 3D res-block in F (compile time); everything else as in the preset.
CONFIG = dataclasses.replace(
    presets.tiny, appearance_feature_extractor=dataclasses.replace(
        presets.tiny.appearance_feature_extractor, num_resblocks=1))


def _square(frame: np.ndarray, size: int) -> np.ndarray:
  """Center-crop to a square and resize: (H, W, 3) uint8 -> (size, size, 3) float32 in [0, 1]."""
  h, w, _ = frame.shape
  s = min(h, w)
  crop = frame[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].astype(np.float32) / 255
  return np.asarray(jax.image.resize(crop, (size, size, 3), "linear"))


def _batch() -> dict[str, np.ndarray]:
  """Frames 0 and 20 of one clip, both ways round: inputs at image_size, targets at output_size (64)."""
  frames, _ = read_video(require(media_dir() / VIDEO, "LivePortrait driving video"), max_frames=21)
  out_h, _ = CONFIG.output_size
  in_h, _ = CONFIG.image_size
  a, b = (_square(frames[i], out_h) for i in (0, 20))
  source, driving = np.stack([a, b]), np.stack([b, a])
  small = lambda x: np.asarray(jax.image.resize(x, (2, in_h, in_h, 3), "linear"))
  return {"source": small(source), "driving": small(driving), "driving_target": driving}


@pytest.fixture(scope="module")
def run():
  batch = _batch()
  gen_tx, disc_tx = optax.adam(3e-3), optax.adam(1e-3)
  weights = {"gan": 0.1, "feature_matching": 1.0}
  # The train state and, in the same program (one compile), the generator alone from the same key.
  key, shape = jax.random.key(0), batch["source"].shape
  state, gen0 = train_step._compile_and_run(lambda: (
      train_step.init_train_state(CONFIG, key, shape, gen_tx, disc_tx, ema=True),
      train_step.init_generator(CONFIG, key, shape)))
  disc0 = jax.tree.map(np.array, state["disc"]["params"])
  ema0 = jax.tree.map(np.array, state["ema"])
  stats0 = jax.tree.map(np.array, state["gen"]["batch_stats"])
  gen0 = jax.device_get(gen0)
  traces = []
  l1_loss = losses.l1_loss
  # l1_loss runs once per trace of the step. A few steps: compiling fast beats running fast (as every test
  # compiles: without most XLA optimisations).
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(losses, "l1_loss", lambda *a, **k: traces.append(1) or l1_loss(*a, **k))
    step = train_step.make_train_step(CONFIG, gen_tx, disc_tx, weights, ema_decay=0.9)
    history, steps_seen, donated = [], [], None
    t0 = time.perf_counter()
    for i in range(MAX_STEPS):
      old = state
      state, metrics = step(state, batch)
      if i == 0:
        donated = [x.is_deleted() for x in jax.tree.leaves(old["gen"]["params"])]
      history.append({k: float(v) for k, v in metrics.items()})
      steps_seen.append(int(state["step"]))
      if history[-1]["l1"] <= 0.5 * history[0]["l1"] and i >= 2:
        break
    seconds = time.perf_counter() - t0
  # The metrics of step i are computed before its update, so history[0]["l1"] is the untrained L1.
  print(f"renderer overfit: L1 {history[0]['l1']:.4f} -> {history[-1]['l1']:.4f} after {len(history) - 1} "
        f"updates, {seconds:.1f} s incl. compile")
  return {"history": history, "steps": steps_seen, "traces": len(traces), "donated": donated,
          "state": state, "disc0": disc0, "ema0": ema0, "stats0": stats0, "gen0": gen0}


@pytest.mark.slow
def test_overfits_two_real_frames(run):
  h = run["history"]
  assert h[-1]["l1"] <= 0.5 * h[0]["l1"], (h[0]["l1"], h[-1]["l1"], len(h))


def test_compiles_once_and_donates_state(run):
  assert len(run["history"]) >= 3
  assert run["traces"] == 1
  assert all(run["donated"])  # the previous state's buffers were donated to the step


def test_generator_alone_is_the_train_states_generator(run):
  """`init_generator` (`create_generator`: inference, smoke runs) makes the train state's F, M, W, G from
  the same key."""
  chex.assert_trees_all_equal(run["gen0"]["params"], run["ema0"])  # the EMA copy starts as the initial params
  chex.assert_trees_all_equal(run["gen0"]["batch_stats"], run["stats0"])


def test_metrics_finite_and_complete(run):
  expected = {"l1", "gan", "feature_matching", "equivariance", "keypoint_prior", "deformation_prior",
              "perceptual", "landmark", "region", "gen_total", "disc_loss", "disc_real", "disc_fake",
              "gen_grad_norm", "disc_grad_norm", "perceptual_enabled"}
  for m in run["history"]:
    assert set(m) == expected
    assert all(np.isfinite(v) for v in m.values()), m
  first = run["history"][0]
  assert first["perceptual_enabled"] == 0.0 and first["perceptual"] == 0.0  # no VGG weights given
  assert first["gen_grad_norm"] > 0 and first["disc_grad_norm"] > 0
  assert first["equivariance"] > 0 and first["deformation_prior"] > 0
  assert first["landmark"] == 0.0 and first["region"] == 0.0  # implicit layout, no region asked for


def test_step_counter_and_updates(run):
  assert run["steps"] == list(range(1, len(run["steps"]) + 1))
  state = run["state"]
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(run["disc0"]),
                          jax.tree.leaves(state["disc"]["params"]), strict=True):
    name = jax.tree_util.keystr(path)
    if "['logits']['bias']" in name:  # hinge gradient is (#fake in margin - #real in margin) / N: 0 here
      continue
    assert not np.allclose(a, b), f"discriminator parameter {name} did not change"
  ema_moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(run["ema0"]),
                                                     jax.tree.leaves(state["ema"]), strict=True)]
  assert np.mean(ema_moved) > 0.9


def test_upper_body_step_shapes():
  """tiny_upper (head keypoints from the batch, R = I for the body, hand injection): traced, not run."""
  cfg = presets.tiny_upper
  tx = optax.adam(1e-3)
  shapes = train_step.train_state_shapes(cfg, (2, *cfg.image_size, 3), tx, tx)
  b, kh = 2, cfg.num_kp_head
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  batch = {"source": f32(b, *cfg.image_size, 3), "driving": f32(b, *cfg.image_size, 3),
           "kp_head_source": f32(b, kh, 3), "kp_head_driving": f32(b, kh, 3),
           "hand_image": f32(b, *cfg.image_size, 3)}
  new_state, metrics = jax.eval_shape(train_step.make_train_step(cfg, tx, tx), shapes, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(shapes)
  assert all(m.shape == () for m in metrics.values())
  assert "hand_encoder" in shapes["gen"]["params"]["G"]


def test_rejects_unknown_loss_weight():
  with pytest.raises(ValueError, match="unknown loss weights"):
    train_step.make_train_step(presets.tiny, optax.adam(1e-3), optax.adam(1e-3), {"vgg": 1.0})


@pytest.mark.parametrize("name,region", [("tiny_head512", None), ("tiny_upper512x768", "hand"),
                                         ("tiny_face_refine", "face"), ("tiny_head512_skip", "mouth"),
                                         ("tiny_upper512x768_skip", "hand")])
def test_chatanyone_layout_steps_trace(name, region):
  """The tiny head512 / upper512x768 / face_refine trace with their batches (they run in tests/train)."""
  cfg = presets.get(name)
  tx = optax.adam(1e-3)
  b = 2
  shapes = train_step.train_state_shapes(cfg, (b, *cfg.image_size, 3), tx, tx)
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  batch = {"source": f32(b, *cfg.image_size, 3), "driving": f32(b, *cfg.image_size, 3),
           "kp_head_source": f32(b, presets.K_HEAD, 3), "kp_head_driving": f32(b, presets.K_HEAD, 3),
           "hand_mask": f32(b, *cfg.output_size, 1), "face_mask": f32(b, *cfg.output_size, 1),
           "mouth_mask": f32(b, *cfg.output_size, 1)}
  if cfg.spade_generator.hand_injection:
    batch["hand_image"] = f32(b, *cfg.image_size, 3)
  if name.startswith("tiny_upper512x768"):
    kb = presets.K_BODY
    batch.update(body_kp_source=f32(b, kb, 3), body_kp_driving=f32(b, kb, 3),
                 body_visibility_source=f32(b, kb), body_visibility_driving=f32(b, kb))
  step = train_step.make_step_fn(cfg, tx, tx, region=region)
  new_state, metrics = jax.eval_shape(step, shapes, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(shapes)
  assert "landmark" in metrics and "region" in metrics


def test_rejects_unknown_region():
  with pytest.raises(ValueError, match="region must be"):
    train_step.make_step_fn(presets.tiny, optax.adam(1e-3), optax.adam(1e-3), region="feet")


def test_source_offsets_drive_the_face_by_its_keypoints_alone():
  """`reconstruct(source_offsets=True)` (Table 1 `--source-offsets`, the stream's keypoints): the driving
  frames' control keypoints are their head keypoints plus the sources' implicit offsets, so the driving
  image reaches W only through its head keypoints. Head layouts only."""
  cfg = presets.get("tiny_head512")
  b, k = 2, presets.K_HEAD
  keys = jax.random.split(jax.random.key(0), 2)
  m_out = {"exp": jax.random.normal(keys[0], (2 * b, k * 3))}  # M's offsets of [sources; drivings]
  kp_head = jax.random.normal(keys[1], (2 * b, k, 3))
  offsets = m_out["exp"].reshape(2 * b, k, 3)
  own = train_step.reenactment_keypoints(cfg, m_out, kp_head)
  stream = train_step.reenactment_keypoints(cfg, m_out, kp_head, source_offsets=True)
  np.testing.assert_allclose(np.asarray(own), np.asarray(kp_head + offsets), atol=1e-6)
  np.testing.assert_allclose(np.asarray(stream[:b]), np.asarray(own[:b]))  # the sources unchanged
  np.testing.assert_allclose(np.asarray(stream[b:]), np.asarray(kp_head[b:] + offsets[:b]), atol=1e-6)
  source = jnp.zeros((1, *cfg.image_size, 3))
  with pytest.raises(ValueError, match="head_offset"):
    train_step.reconstruct(presets.get("tiny_upper512x768"), {}, {}, source, source, source_offsets=True,
                           kp_head=(jnp.zeros((1, k, 3)),) * 2)


def test_single_d_pass_gives_the_gradients_of_the_reported_losses():
  """D runs once per step and both backward passes go through it: with plain SGD (lr 1) each network's
  update is minus the gradient of its own reported loss (gen_total for F, M, W, G; disc_loss for D), as
  autodiff through the step's forward computes it."""
  cfg = presets.get("tiny_head512_skip")
  tx = optax.sgd(1.0)
  b = 2
  keys = jax.random.split(jax.random.key(3), 4)
  batch = {"source": jax.random.uniform(keys[0], (b, *cfg.image_size, 3)),
           "driving": jax.random.uniform(keys[1], (b, *cfg.image_size, 3)),
           "kp_head_source": 0.3 * jax.random.normal(keys[2], (b, presets.K_HEAD, 3)),
           "kp_head_driving": 0.3 * jax.random.normal(keys[3], (b, presets.K_HEAD, 3))}
  step = train_step.make_step_fn(cfg, tx, tx)

  def run():
    state = train_step.init_train_state(cfg, jax.random.key(0), (b, *cfg.image_size, 3), tx, tx)

    def reported(gen_params, disc_params):
      s = {**state, "gen": {**state["gen"], "params": gen_params},
           "disc": {**state["disc"], "params": disc_params}}
      metrics = step(s, batch)[1]
      return metrics["gen_total"], metrics["disc_loss"]

    gp, dp = state["gen"]["params"], state["disc"]["params"]
    # One linearisation of the reported losses, pulled back once per loss (two jax.grad calls would
    # linearise the step twice: 32.5 -> 24.5 CPU-s to trace and compile, measured).
    _, pullback = jax.vjp(reported, gp, dp)
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
    return gp, dp, step(state, batch)[0], pullback((one, zero))[0], pullback((zero, one))[1]

  # One program: the init, the step and both reference gradients (one compile; host arrays after it).
  gp, dp, new, g_ref, d_ref = jax.device_get(jax.jit(run)())
  for updated, before, ref in ((new["gen"]["params"], gp, g_ref), (new["disc"]["params"], dp, d_ref)):
    step_grads = jax.tree.map(np.subtract, before, updated)  # SGD(1): before - after = the gradient
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(ref))
    chex.assert_trees_all_close(step_grads, ref, atol=1e-4 * scale, rtol=1e-3)
