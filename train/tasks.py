"""The stage-1 training tasks (AudioEncoder + FaceMotionDiT, UpperBodyMotion) and the registry of all tasks.

`get_task(config)` builds the `train.task_base.Task` named by config.task: "motion_face" / "motion_lip" /
"motion_body" (here) or "render" (the renderers and face refine, `train.render_task`). The motion tasks
read motion windows (`data.pipelines.motion_windows`), keep their normalisation statistics in state["norm"]
and use the default state {"params", "opt_state", "ema", "step", "norm"} of `Task.make_init` /
`Task.make_step`.

Model sizes: config.model.variant names a row of the model file's size table (`face_motion_dit.VARIANTS`,
`upper_body_motion.VARIANTS`); config.model.dit / .body / .audio override single fields. Configs written
before variants existed spell every size out and name no variant: `resolve_model` reads both forms.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from chatanyone_jax import template as tp
from chatanyone_jax.audio import AudioEncoder, ExternalFeatureAdapter, log_mel_spectrogram, whisper
from chatanyone_jax.motion import face_motion_dit, upper_body_motion
from chatanyone_jax.motion.appearance_embedding import AppearanceEmbedding
from chatanyone_jax.motion.diffusion import cosine_schedule, ddim_sample
from chatanyone_jax.motion.face_motion_dit import (
  MOTION_DIM,
  NUM_EXP,
  FaceMotionConfig,
  FaceMotionDiT,
  style_controls,
)
from chatanyone_jax.motion.sampling import FaceConditions, sample_window
from chatanyone_jax.motion.train_step import (
  FaceModels,
  body_batch_loss,
  curve_loss,
  face_batch_loss,
  style_augment,
)
from chatanyone_jax.motion.upper_body_motion import UpperBodyConfig, UpperBodyMotion, dummy_upper_body_inputs
from chatanyone_jax.ops.init_rng import init_key
from train import plots
from train.lip_task import MotionLip
from train.motion_common import FPS, SAMPLE_RATE, MotionTask
from train.motion_common import std as _std
from train.render_task import RenderTask
from train.task_base import Task


def _window_audio(audio: np.ndarray, history: int, window: int) -> np.ndarray:
  """(B, round((T+H) · spf)) samples -> (B, round(T · spf)) samples of the last T frames (zero-padded)."""
  spf = SAMPLE_RATE / FPS
  a0, n = int(round(history * spf)), int(round(window * spf))
  out = audio[:, a0:a0 + n].astype(np.float32)
  if out.shape[1] < n:
    out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
  return out


def _audio_encoder(sizes: dict, width: int) -> AudioEncoder:
  return AudioEncoder(width=width, fps=FPS, **sizes)




def _feature_adapter(sizes: dict, width: int) -> ExternalFeatureAdapter:
  """The trained part of the Whisper front end, sized like the variant's AudioEncoder (no conv stack)."""
  keep = {k: v for k, v in sizes.items() if k in ("num_layers", "num_heads", "mlp_ratio")}
  return ExternalFeatureAdapter(frame_rate=whisper.FRAME_RATE, phase_in=0.0, width=width, fps=FPS, **keep)


def _resolve(model: dict, decode_variant) -> dict:
  """config.model with the variant's sizes under its explicit fields, "variant" dropped (as old configs)."""
  model = dict(model)
  for part, sizes in decode_variant(model.pop("variant", None)).items():
    model[part] = {**sizes, **model.get(part, {})}
  return model


# ------------------------------------------------------------------------------------------------ face


def face_motion_plot(target: np.ndarray, sample: np.ndarray) -> np.ndarray:
  """Mouth opening (inner-lip gap of the mean-identity template shape), yaw and pitch over the window,
  ground truth vs sample, as an image. target, sample: (T, 58) raw exp ⊕ pose."""
  template = tp.load_head_template()
  mouth = lambda m: np.asarray(tp.mouth_opening(template, m[:, :tp.NUM_EXP]))

  panels = {"mouth opening": {"ground truth": mouth(target), "sample": mouth(sample)},
            "yaw (deg)": {"ground truth": target[:, NUM_EXP + 1], "sample": sample[:, NUM_EXP + 1]},
            "pitch (deg)": {"ground truth": target[:, NUM_EXP], "sample": sample[:, NUM_EXP]}}
  return plots.curves_image(panels)


class MotionFace(MotionTask):
  """AudioEncoder + FaceMotionDiT, the ε-loss of `face_batch_loss` on normalised 58-D motion.

  Model batch (adapt): "motion" (B, H+T, 58) raw exp ⊕ pose (first H frames = history), "audio" (B, L)
  16 kHz samples of the last T frames, "ref_motion" (B, T, 58) a reference window of the same clip,
  "audio_valid" (B, T) the frames whose audio is heard (all but after the cut of look-ahead augmentation).
  Inside the step: motion normalised per dimension with state["norm"] (dataset mean / std), log-mel of the
  audio, style controls of the normalised target (as `style_controls` at inference); in training the
  history / reference replaced by their learned null embeddings with probability p_history_drop /
  p_reference_drop (the first window, and no reference video, at inference) and the amplitude / pose
  range randomly rescaled (`style_augment`, so the style controls act independently of the reference).
  """

  name = "motion_face"

  def __init__(self, config):
    super().__init__(config)
    m = self.resolve_model(config.model.to_dict())
    self.dit_config = FaceMotionConfig(window=config.window, history=config.history, **m["dit"])
    self._set_speech(m)
    if self.speech_encoder is not None:
      audio = _feature_adapter(m["audio"], self.dit_config.audio_dim)
    else:
      audio = _audio_encoder(m["audio"], self.dit_config.audio_dim)
    self.models = FaceModels(FaceMotionDiT(self.dit_config), audio)
    self.schedule = cosine_schedule(m["diffusion_steps"])

  def front_end_input(self, speech_params: dict | None, audio: jax.Array) -> jax.Array:
    """What the trained front end reads for windows of audio: (B, speech_context + W) samples (the left
    context first; zeros where there was no audio) -> log-mel of the window (B, T_mel, 80) or Whisper
    features of the window (B, n, 384) (`whisper.window_features`, as the cache and the streaming step)."""
    if self.speech_encoder is None:
      return log_mel_spectrogram(audio[:, self.speech_context:])
    return whisper.window_features(self.speech_encoder, speech_params, audio, self.speech_context)

  def window_tokens(self, params: dict, speech_params: dict | None, audio: jax.Array) -> jax.Array:
    """Audio tokens (B, T, audio_dim) of windows of audio with their left context (`front_end_input`)."""
    return self.models.audio.apply({"params": params["audio"]}, self.front_end_input(speech_params, audio),
                                   num_tokens=self.config.window)

  def clip_tokens(self, params: dict, speech_params: dict | None, audio: jax.Array,
                  num_windows: int) -> jax.Array:
    """Audio tokens (1, num_windows · T, audio_dim) of a clip's audio (L >= num_windows · W samples) cut into
    consecutive windows of W samples, each with its left context (zeros before the clip), as a stream."""
    return self.window_tokens(params, speech_params, self.clip_windows(audio, num_windows)).reshape(
        1, num_windows * self.config.window, -1)

  def clip_windows(self, audio: jax.Array, num_windows: int) -> jax.Array:
    """(num_windows, speech_context + W) samples: a clip's audio (L >= num_windows · W samples) cut into
    consecutive windows of W samples, each after its left context (zeros before the clip), as a stream."""
    w, ctx = self.window_samples, self.speech_context
    x = jnp.concatenate([jnp.zeros((ctx,), jnp.float32), jnp.asarray(audio, jnp.float32)])
    return x[np.arange(num_windows)[:, None] * w + np.arange(ctx + w)[None]]

  @classmethod
  def resolve_model(cls, model: dict) -> dict:
    """{"dit": FaceMotionConfig fields, "audio": AudioEncoder fields, "diffusion_steps"} (see the module
    docstring), plus "speech_features" and "speech_context_s" for a frozen speech encoder (a log-mel model
    resolves without them, as configs written before the option did)."""
    model = _resolve(model, face_motion_dit.decode_variant)
    if model.get("speech_features", "log_mel") == "log_mel":
      model.pop("speech_features", None)
      model.pop("speech_context_s", None)
    return model

  def adapt(self, batch: dict) -> dict:
    out = {"motion": np.asarray(batch["motion"], np.float32),
           "ref_motion": np.asarray(batch["ref_motion"], np.float32),
           "valid": np.asarray(batch["valid"], np.float32), "ref_valid": np.asarray(batch["ref_valid"],
                                                                                    np.float32),
           "audio_valid": np.asarray(batch["audio_valid"], np.float32)}
    out["audio"] = _window_audio(np.asarray(batch["audio"]), self.config.history, self.config.window)
    if "speech" in batch:  # cached features of a Whisper front end (`speech_cache`)
      out["speech"] = np.asarray(batch["speech"], np.float32)
    return out

  def batch_spec(self, batch_size: int) -> dict:
    c = self.config
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    spec = {"motion": f(batch_size, c.history + c.window, MOTION_DIM),
            "audio": f(batch_size, self.window_samples), "ref_motion": f(batch_size, c.window, MOTION_DIM),
            "valid": f(batch_size, c.history + c.window),
            "ref_valid": f(batch_size), "audio_valid": f(batch_size, c.window)}
    if self.speech_encoder is not None:
      n = whisper.num_window_features(self.window_samples, self.speech_context)
      spec["speech"] = f(batch_size, n, self.speech_encoder.width)
    return spec

  def norm_spec(self) -> dict:
    return {"motion_mean": jax.ShapeDtypeStruct((MOTION_DIM,), jnp.float32),
            "motion_std": jax.ShapeDtypeStruct((MOTION_DIM,), jnp.float32)}

  def norm_stats(self, batches: list[dict]) -> dict:
    m = np.concatenate([b["motion"][b["valid"] > 0.5] for b in batches])  # padding frames left out
    return {"motion_mean": m.mean(0).astype(np.float32), "motion_std": _std(m, 0)}

  def init_params(self, rng: jax.Array, spec: dict) -> dict:
    if "speech" in spec:
      shape = spec["speech"].shape[1:]  # (n, 384) features
    else:
      shape = log_mel_spectrogram(jnp.zeros(spec["audio"].shape[1:])).shape  # (T_mel, n_mels), traced
    ref_len = self.config.window if self.config.use_reference else None
    return self.models.init_params(rng, ref_len=ref_len, mel_shape=tuple(shape))

  def model_batch(self, batch: dict, rng: jax.Array, norm: dict, *, train: bool = False) -> dict:
    """The normalised `face_batch_loss` batch (all of it derived inside the jitted step).

    train=True adds the training-only randomness: the null history with probability p_history_drop, the
    null reference with probability p_reference_drop, `style_augment` (style_augment = the largest
    factor, applied with probability p_style_augment) and a random gain of the audio, uniform in
    ± audio_gain_db dB (log-mel front end; cached Whisper features are used as they are). Otherwise every
    window has its history and reference (unless padded) and nothing is rescaled.
    """
    c = self.config
    motion = (batch["motion"] - norm["motion_mean"]) / norm["motion_std"]  # (B, H+T, 58)
    b = motion.shape[0]
    k_hist, k_ref, k_style, k_gain = jax.random.split(rng, 4)
    if self.speech_encoder is not None:
      if "speech" not in batch:
        raise ValueError("a Whisper front end trains on cached window features: build the loader with "
                         "speech_features (MotionFace.loader does)")
      speech = {"features": batch["speech"]}  # (B, n, 384)
    else:
      audio = batch["audio"]
      if train and c.get("audio_gain_db", 0.0) > 0:  # loudness is the speaker's and the microphone's
        db = jax.random.uniform(k_gain, (b, 1), minval=-c.audio_gain_db, maxval=c.audio_gain_db)
        audio = audio * 10.0 ** (db / 20.0)
      speech = {"mel": log_mel_spectrogram(audio)}  # (B, T_mel, 80)
    if train and c.get("style_augment", 1.0) > 1.0:
      motion, _ = style_augment(motion, k_style, window=c.window, max_scale=c.style_augment,
                                prob=c.get("p_style_augment", 0.5))
    target = motion[:, c.history:]
    keep = lambda k, p: jax.random.bernoulli(k, 1.0 - p, (b,)) if train else jnp.ones((b,), bool)
    # A padded window (a short clip, `data.pipelines.MotionWindowConfig.short_min_frames`): the loss skips
    # its padding and a history with padding in it is the null history.
    valid = batch["valid"] > 0.5 if "valid" in batch else jnp.ones(motion.shape[:2], bool)  # (B, H+T)
    out = {"motion": target, "history": motion[:, :c.history], "style": style_controls(target),
           "history_valid": keep(k_hist, c.p_history_drop) & jnp.all(valid[:, :c.history], axis=1),
           "mask": valid[:, c.history:], **speech}
    if "audio_valid" in batch:  # look-ahead augmentation (config.lookahead_prob): frames not heard yet
      out["audio_valid"] = batch["audio_valid"] > 0.5
    if c.use_reference:
      ref = (batch["ref_motion"] - norm["motion_mean"]) / norm["motion_std"]
      out["reference"] = ref[..., :self.dit_config.ref_dim]
      out["reference_valid"] = keep(k_ref, c.get("p_reference_drop", 0.0))
      if "ref_valid" in batch:
        out["reference_valid"] &= batch["ref_valid"] > 0.5
    return out

  def loss(self, params, batch: dict, rng: jax.Array, norm: dict) -> jax.Array:
    k_batch, k_loss = jax.random.split(rng)
    return face_batch_loss(params, self.model_batch(batch, k_batch, norm, train=True), k_loss,
                           model=self.models, schedule=self.schedule, x0_loss=self.mouth_loss(norm))

  def mouth_loss(self, norm: dict):
    """The lip loss (`curve_loss` of the mouth opening, weight config.mouth_loss_weight) on the predicted
    clean motion, or None (weight 0, the default)."""
    weight = float(self.config.get("mouth_loss_weight", 0.0))
    if weight <= 0:
      return None
    if self.dit_config.prediction != "x0":
      raise ValueError("config.mouth_loss_weight needs an x0-predicting DiT (config.model.dit.prediction "
                       f"'x0'), got {self.dit_config.prediction!r}")
    template = tp.load_head_template()
    raw = lambda m: m * norm["motion_std"] + norm["motion_mean"]
    opening = lambda m: tp.mouth_opening(template, raw(m)[..., :NUM_EXP])
    return functools.partial(curve_loss, curve=opening, weight=weight)

  def make_summary(self):
    """A DDIM sample (EMA params, 10 steps) of the first window of the batch next to its ground truth."""
    c = self.config

    def sample(state: dict, batch: dict) -> dict:
      norm, params = state["norm"], state["ema"]
      one = jax.tree.map(lambda x: x[:1], batch)
      mb = self.model_batch(one, jax.random.key(0), norm)
      x = mb["mel"] if "mel" in mb else mb["features"]
      audio = self.models.audio.apply({"params": params["audio"]}, x, num_tokens=c.window)
      cond = FaceConditions(audio, mb["history"], mb["style"], mb.get("reference"), jnp.ones((1,), bool))
      x = sample_window(self.models.dit, params["face"], cond, jax.random.key(0), schedule=self.schedule,
                        num_steps=10, clip_x0=4.0)
      raw = lambda m: m[0] * norm["motion_std"] + norm["motion_mean"]
      return {"sample": raw(x), "target": one["motion"][0, c.history:]}

    return sample

  def summaries(self, arrays: dict) -> dict[str, np.ndarray]:
    return {"motion/sample_vs_ground_truth": face_motion_plot(arrays["target"], arrays["sample"])}


# ------------------------------------------------------------------------------------------------ body


class MotionBody(MotionTask):
  """UpperBodyMotion + its own AudioEncoder + `AppearanceEmbedding` of the identity, `body_batch_loss`.

  Target per frame (UpperBodyLayout order), from the records, host side in `adapt`:
    head_offset ΔX_head (K_h, 3): zeros for now (it is the keypoint detector's implicit offset, which
      needs the stage-2 detector L; the model still learns to predict ~0 there);
    body_delta δ (K_b, 3): body keypoints in the head's frame, (X_body - t) / s, minus the same at the
      first frame of the H+T sequence (X_c, the "source" frame);
    scale s (1) and translation t (3): the head-template scale and translation of the frame;
    hands (130): the hand coefficients.
  Conditions: head_kp (B, T, 32, 3) the template keypoints of the frame (what FaceMotionDiT's output
  projects to at inference), audio tokens of the window, appearance = projected identity.
  The target is normalised per dimension with state["norm"] inside the step.
  """

  name = "motion_body"

  def __init__(self, config):
    super().__init__(config)
    if config.get("short_min_frames", 0):
      raise ValueError("motion_body trains on whole windows only: set config.short_min_frames=0 (short "
                       "clips are face crops of talking heads, with no body to learn from)")
    m = self.resolve_model(config.model.to_dict())
    self.body_config = UpperBodyConfig(window=config.window, **m["body"])
    self.model = UpperBodyMotion(self.body_config)
    self.audio = _audio_encoder(m["audio"], self.body_config.audio_dim)
    self.appearance = AppearanceEmbedding(self.body_config.app_dim)
    self.schedule = cosine_schedule(m["diffusion_steps"])
    self.dim = self.body_config.layout.dim

  @classmethod
  def resolve_model(cls, model: dict) -> dict:
    """{"body": UpperBodyConfig fields, "audio": AudioEncoder fields, "diffusion_steps"} (see the module
    docstring)."""
    return _resolve(model, upper_body_motion.decode_variant)

  def target(self, batch: dict) -> np.ndarray:
    """(B, T, layout.dim) packed raw target of the last T frames (see the class docstring)."""
    h = self.config.history
    layout = self.body_config.layout
    s = np.asarray(batch["scale"], np.float32)[..., None, None]  # (B, H+T, 1, 1)
    t = np.asarray(batch["pose"], np.float32)[..., 3:6]  # (B, H+T, 3)
    canon = (np.asarray(batch["body_kp"], np.float32) - t[:, :, None]) / np.maximum(s, 1e-6)
    delta = canon - canon[:, :1]  # (B, H+T, K_b, 3)
    b, n = t.shape[:2]
    parts = {"head_offset": np.zeros((b, n, layout.num_head_kp * 3), np.float32),
             "body_delta": delta.reshape(b, n, -1), "scale": s[..., 0], "translation": t,
             "hands": np.asarray(batch["hand_coeffs"], np.float32)}
    assert list(parts) == list(layout.sizes), "UpperBodyLayout order changed"
    return np.concatenate(list(parts.values()), -1)[:, h:]

  def adapt(self, batch: dict) -> dict:
    h = self.config.history
    return {"target": self.target(batch), "head_kp": np.asarray(batch["head_kp"], np.float32)[:, h:],
            "audio": _window_audio(np.asarray(batch["audio"]), h, self.config.window),
            "identity": np.asarray(batch["identity"], np.float32)}

  def batch_spec(self, batch_size: int) -> dict:
    c = self.config
    n_id = tp.load_head_template().num_id
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    return {"target": f(batch_size, c.window, self.dim),
            "head_kp": f(batch_size, c.window, self.body_config.layout.num_head_kp, 3),
            "audio": f(batch_size, int(round(c.window * SAMPLE_RATE / FPS))), "identity": f(batch_size, n_id)}

  def norm_spec(self) -> dict:
    return {"target_mean": jax.ShapeDtypeStruct((self.dim,), jnp.float32),
            "target_std": jax.ShapeDtypeStruct((self.dim,), jnp.float32)}

  def norm_stats(self, batches: list[dict]) -> dict:
    x = np.concatenate([b["target"].reshape(-1, self.dim) for b in batches])
    return {"target_mean": x.mean(0).astype(np.float32), "target_std": _std(x, 0)}

  def init_params(self, rng: jax.Array, spec: dict) -> dict:
    k_audio, k_body, k_app = jax.random.split(init_key(rng), 3)
    n_mel = log_mel_spectrogram(jnp.zeros(spec["audio"].shape[1:])).shape
    return {"audio": self.audio.init(k_audio, jnp.zeros((1,) + tuple(n_mel)))["params"],
            "body": self.model.init(k_body, *dummy_upper_body_inputs(self.body_config, 1, 1))["params"],
            "appearance": self.appearance.init(k_app, spec["identity"].shape[-1])}

  def model_batch(self, params, batch: dict, norm: dict) -> dict:
    """The normalised `body_batch_loss` batch of an adapted batch (target, head_kp, audio tokens,
    appearance)."""
    tokens = self.audio.apply({"params": params["audio"]}, log_mel_spectrogram(batch["audio"]),
                              num_tokens=self.config.window)  # (B, T, audio_dim)
    return {"target": (batch["target"] - norm["target_mean"]) / norm["target_std"],
            "head_kp": batch["head_kp"], "audio": tokens,
            "appearance": self.appearance.apply(params["appearance"], batch["identity"])}

  def make_summary(self):
    """A DDIM sample (EMA params, 10 steps) of the first window of the batch next to its ground truth."""

    def sample(state: dict, batch: dict) -> dict:
      norm, params = state["norm"], state["ema"]
      mb = self.model_batch(params, jax.tree.map(lambda x: x[:1], batch), norm)
      eps_fn = lambda x, t: self.model.apply({"params": params["body"]}, x, t, mb["head_kp"], mb["audio"],
                                             mb["appearance"])
      x = ddim_sample(eps_fn, self.schedule, mb["target"].shape, jax.random.key(0), num_steps=10,
                      clip_x0=4.0, prediction=self.body_config.prediction)
      raw = lambda m: m[0] * norm["target_std"] + norm["target_mean"]
      return {"sample": raw(x), "target": batch["target"][0]}

    return sample

  def summaries(self, arrays: dict) -> dict[str, np.ndarray]:
    sizes = self.body_config.layout.sizes
    offsets = np.cumsum([0, *sizes.values()])
    part = dict(zip(sizes, offsets[:-1], strict=True))
    dims = {"scale s": part["scale"], "translation t_x": part["translation"],
            "translation t_y": part["translation"] + 1, "hand coefficient 0": part["hands"],
            "body delta (keypoint 0, x)": part["body_delta"]}
    panels = {name: {"ground truth": arrays["target"][:, d], "sample": arrays["sample"][:, d]}
              for name, d in dims.items()}
    return {"motion/sample_vs_ground_truth": plots.curves_image(panels)}

  def loss(self, params, batch: dict, rng: jax.Array, norm: dict) -> jax.Array:
    return body_batch_loss(params["body"], self.model_batch(params, batch, norm), rng, model=self.model,
                           schedule=self.schedule)


TASKS: dict[str, type[Task]] = {"motion_face": MotionFace, "motion_lip": MotionLip, "motion_body": MotionBody,
                                "render": RenderTask}


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task named by config.task, built from config."""
  if config.task not in TASKS:
    raise ValueError(f"config.task={config.task!r} is not one of {sorted(TASKS)}")
  return TASKS[config.task](config)
