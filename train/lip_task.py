"""The lip regressor's training task, "motion_lip" (`chatanyone_jax.motion.lip_regressor`).

Registered in `train.tasks.TASKS`; `train.fit_lip` fits its linear model in closed form, `train.main` by
gradient steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.audio import whisper
from chatanyone_jax.motion.face_motion_dit import MOTION_DIM, NUM_EXP
from chatanyone_jax.motion.lip_regressor import LipRegressor, frame_features
from chatanyone_jax.ops.init_rng import init_key
from train.motion_common import FPS, MotionTask, std


class MotionLip(MotionTask):
  """The lip regressor (`chatanyone_jax.motion.lip_regressor`): each frame's expression from the frozen
  speech encoder's features around it, trained by squared error on the face model's windows.

  The same windows, cached Whisper features and augmentations as "motion_face" (a config with the same
  window, history, stride and short_min_frames reuses its feature caches): silence spans with the mouth
  eased shut (silence_prob) and audio cut after a look-ahead (lookahead_prob; unheard frames are left out
  of the loss, as the stream never emits them); with `LipRegressor.speech_layer` the features of that block
  of the encoder, cached apart. Batch (`adapt`): "motion" (B, H+T, 58) (only the window's
  T frames and their 52 expression coefficients are used), "valid" (B, H+T), "audio_valid" (B, T), "speech"
  (B, n, 384), "silence" (B, H+T) (how far silence augmentation eased each frame shut: the speech gate's
  target in `train.fit_lip`). state["norm"]: "feature_mean" / "feature_std" (384,) of the features at the
  frame rate and "exp_mean" / "exp_std" (52,) of the expression.
  """

  name = "motion_lip"

  def __init__(self, config):
    super().__init__(config)
    m = self.resolve_model(config.model.to_dict())
    self._set_speech(m)
    if self.speech_encoder is None:
      raise ValueError("the lip regressor reads a frozen speech encoder's features: set "
                       "config.model.speech_features to 'whisper_tiny_en'")
    self.model = LipRegressor(**m["lip"])
    self.speech_layer = self.model.speech_layer
    try:
      whisper.check_layers(self.speech_encoder, (self.speech_layer,))
    except ValueError as e:
      raise ValueError(f"config.model.lip.speech_layer: {e}") from None

  @classmethod
  def resolve_model(cls, model: dict) -> dict:
    """{"speech_features", "speech_context_s", "lip": LipRegressor fields} with the defaults spelt out."""
    return {"speech_features": model.get("speech_features", "whisper_tiny_en"),
            "speech_context_s": model.get("speech_context_s", whisper.CONTEXT_S),
            "lip": {"context": 2, "hidden": 0, "speech_layer": None, "gate": False,
                    **dict(model.get("lip", {}))}}

  def adapt(self, batch: dict) -> dict:
    if "speech" not in batch:
      raise ValueError("the lip regressor trains on cached window features: build the loader with "
                       "speech_features (MotionLip.loader does)")
    return {k: np.asarray(batch[k], np.float32)
            for k in ("motion", "valid", "audio_valid", "speech", "silence")}

  def batch_spec(self, batch_size: int) -> dict:
    c = self.config
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    n = whisper.num_window_features(self.window_samples, self.speech_context)
    frames = c.history + c.window
    return {"motion": f(batch_size, frames, MOTION_DIM), "valid": f(batch_size, frames),
            "audio_valid": f(batch_size, c.window), "speech": f(batch_size, n, self.speech_encoder.width),
            "silence": f(batch_size, frames)}

  def norm_spec(self) -> dict:
    d = self.speech_encoder.width
    f = lambda n: jax.ShapeDtypeStruct((n,), jnp.float32)
    return {"feature_mean": f(d), "feature_std": f(d), "exp_mean": f(NUM_EXP), "exp_std": f(NUM_EXP)}

  def _frames(self, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """(features (B, T, D) at the frame rate, the window's loss mask (B, T)) of an adapted batch."""
    c = self.config
    x = np.asarray(whisper.features_to_frames(jnp.asarray(batch["speech"]), FPS, c.window))
    return x, (batch["valid"][:, c.history:] > 0.5) & (batch["audio_valid"] > 0.5)

  def norm_stats(self, batches: list[dict]) -> dict:
    h = self.config.history
    feats, exps = [], []
    for b in batches:
      x, mask = self._frames(b)
      feats.append(x[mask])
      exps.append(b["motion"][:, h:, :NUM_EXP][mask])
    x, e = np.concatenate(feats), np.concatenate(exps)
    return {"feature_mean": x.mean(0).astype(np.float32), "feature_std": std(x, 0),
            "exp_mean": e.mean(0).astype(np.float32), "exp_std": std(e, 0)}

  def init_params(self, rng: jax.Array, spec: dict) -> dict:
    d = spec["speech"].shape[-1]
    return self.model.init(init_key(rng), jnp.zeros((1, self.config.window, d)))["params"]

  def frame_inputs(self, speech: jax.Array, norm: dict) -> jax.Array:
    """The regressor's input (B, T, D): windows' features (B, n, D) at the frame rate, standardised."""
    return frame_features(speech, FPS, self.config.window, norm)

  def predict(self, params, speech: jax.Array, norm: dict) -> jax.Array:
    """The normalised expression (B, T, 52) of windows' features (B, n, D)."""
    return self.model.apply({"params": params}, self.frame_inputs(speech, norm))

  def loss(self, params, batch: dict, rng: jax.Array, norm: dict) -> jax.Array:
    h = self.config.history
    target = (batch["motion"][:, h:, :NUM_EXP] - norm["exp_mean"]) / norm["exp_std"]
    mask = (batch["valid"][:, h:] > 0.5) & (batch["audio_valid"] > 0.5)
    err = jnp.mean((self.predict(params, batch["speech"], norm) - target) ** 2, axis=-1)  # (B, T)
    return jnp.sum(jnp.where(mask, err, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
