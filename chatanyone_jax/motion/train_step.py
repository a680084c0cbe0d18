"""Stage-1 training pieces: the train state, the update step, the losses of a batch, training windows.

Train state (STYLE.md): an explicit pytree {"params", "opt_state", "ema", "step" () int32} built by
`init_train_state` and advanced by `update_step` (pure: the caller jits it, the trainer with shardings and
the state donated). Its key is fold_in(key, state["step"]); EMA: ema <- d · ema + (1 - d) · params after
every update, starting from ema = params. `train.task_base.Task` builds the trainer's state and step from
these; tests and benchmarks use the same functions.

The face model is AudioEncoder + FaceMotionDiT trained jointly through the ε-loss (`FaceModels`,
`face_batch_loss`); `motion_windows` cuts a clip into (window, history) pairs and `style_augment` rescales
a window so that the style controls vary independently of the audio and of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from chatanyone_jax import ema as ema_lib
from chatanyone_jax import tree_math
from chatanyone_jax.audio.encoder import AudioEncoder, ExternalFeatureAdapter
from chatanyone_jax.motion.diffusion import NoiseSchedule, diffusion_loss
from chatanyone_jax.motion.face_motion_dit import NUM_EXP, FaceMotionDiT
from chatanyone_jax.motion.sampling import face_motion_loss
from chatanyone_jax.motion.upper_body_motion import UpperBodyMotion
from chatanyone_jax.ops.init_rng import init_key

TrainState = dict  # {"params", "opt_state", "ema", "step"}

# Keys of a face batch passed through to `face_motion_loss` when present.
_FACE_KEYS = ("motion", "history", "style", "reference", "history_valid", "reference_valid", "audio_valid",
              "mask")


class FaceModels(NamedTuple):
  """The modules trained jointly by `face_batch_loss`.

  dit: the FaceMotionDiT (its config gives T, H and audio_dim).
  audio: the speech front end's trained part: an AudioEncoder (log-mel -> tokens) or an
    ExternalFeatureAdapter (frozen speech-model features, e.g. Whisper's -> tokens); its width must equal
    dit.config.audio_dim.
  """
  dit: FaceMotionDiT
  audio: AudioEncoder | ExternalFeatureAdapter

  def init_params(self, key: jax.Array, *, ref_len: int | None = None,
                  mel_shape: tuple[int, int] = (100, 80)) -> dict:
    """{"audio": front-end params, "face": FaceMotionDiT params}; pure (jit it, or trace it in a train
    state initialiser).

    key: split between the two networks. ref_len: initialise the DiT's reference branch too (any static
    T_ref; None = no reference input). mel_shape: (frames, channels) of the dummy front-end input, the
    log-mel or the speech features (the parameters depend on the channels only).
    """
    if self.audio.width != self.dit.config.audio_dim:
      raise ValueError(f"audio front end width {self.audio.width} != FaceMotionConfig.audio_dim "
                       f"{self.dit.config.audio_dim}")
    k_audio, k_face = jax.random.split(init_key(key))
    mel = jnp.zeros((1, *mel_shape), jnp.float32)
    return {"audio": self.audio.init(k_audio, mel)["params"],
            "face": self.dit.init_params(k_face, 1, ref_len)}


def style_augment(motion: jax.Array, key: jax.Array, *, window: int, max_scale: float = 2.0,
                  prob: float = 0.5, num_exp: int = NUM_EXP) -> tuple[jax.Array, jax.Array]:
  """Random expression-amplitude and pose-range augmentation of (history ⊕ window) sequences.

  Why: a model trained only on real windows can read a window's amplitude from its audio and from the
  reference sequence (another window of the same clip), and then ignores the amplitude control. Here
  each sample, with probability `prob` (expression and pose independently), has its expression (pose)
  coefficients scaled about their mean over the target window by f ~ LogUniform[1 / max_scale,
  max_scale]: x' = m + f (x - m) for the history frames as well, so the history still joins the window.
  `style_controls` of the scaled window is then exactly f times the original (std and max - min are
  both linear in f); the audio and the reference are left as they were.

  Args:
    motion: (B, N, D) normalised motion, the last `window` frames are the target window.
    key: PRNG key.
    window: T.
    max_scale: largest factor (1 disables the augmentation).
    prob: probability that a sample's expression (and, independently, its pose) is scaled.
    num_exp: the first num_exp of D are expression, the rest pose.

  Returns:
    (scaled (B, N, D), factors (B, 2): (expression, pose)).
  """
  b, _, d = motion.shape
  ks = jax.random.split(key, 4)
  log_max = math.log(max(float(max_scale), 1.0))

  def factor(k_on, k_f):
    on = jax.random.bernoulli(k_on, prob, (b,))
    f = jnp.exp(jax.random.uniform(k_f, (b,), minval=-log_max, maxval=log_max))
    return jnp.where(on, f, 1.0)

  f_exp, f_pose = factor(ks[0], ks[1]), factor(ks[2], ks[3])
  scale = jnp.concatenate([jnp.broadcast_to(f_exp[:, None], (b, num_exp)),
                           jnp.broadcast_to(f_pose[:, None], (b, d - num_exp))], axis=-1)[:, None]
  center = jnp.mean(motion[:, -window:], axis=1, keepdims=True)  # (B, 1, D)
  return center + scale * (motion - center), jnp.stack([f_exp, f_pose], axis=-1)


# --------------------------------------------------------------------------------------------- state


def init_train_state(params, tx: optax.GradientTransformation) -> TrainState:
  """{"params", "opt_state", "ema" (a copy of params), "step" = 0} for any params pytree."""
  return {"params": params, "opt_state": tx.init(params), "ema": jax.tree.map(jnp.array, params),
          "step": jnp.zeros((), jnp.int32)}


# --------------------------------------------------------------------------------------------- steps


def update_step(state: TrainState, batch: dict, loss_fn: Callable[[object, dict, jax.Array], jax.Array],
                tx: optax.GradientTransformation, ema_decay: float,
                key: jax.Array) -> tuple[TrainState, dict]:
  """One optimisation step, pure (callers jit it, with or without shardings).

  rng = fold_in(key, state["step"]); loss and gradients; optax update; `chatanyone_jax.ema.update`;
  step + 1. Other entries of `state` are carried unchanged. metrics: "loss", "grad_norm" (global L2 norm
  of the gradients before the transform), "param_norm" () float32 each.
  """
  rng = jax.random.fold_in(key, state["step"])
  loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, rng)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  ema = ema_lib.update(state["ema"], params, ema_decay, state["step"])
  new = {**state, "params": params, "opt_state": opt_state, "ema": ema, "step": state["step"] + 1}
  metrics = {"loss": loss, "grad_norm": tree_math.global_norm(grads),
             "param_norm": tree_math.global_norm(params)}
  return new, metrics


def face_batch_loss(params, batch: dict, rng: jax.Array, *, model: FaceModels,
                    schedule: NoiseSchedule, x0_loss: Callable | None = None) -> jax.Array:
  """ε-loss of one face batch with condition dropout, the audio encoder in the graph.

  Args:
    params: {"audio": AudioEncoder params, "face": FaceMotionDiT params}.
    batch: "mel" (B, T_mel, n_mels) log-mel of the window (100 Hz; T_mel ≈ T · 100 / fps), or
      "features" (B, T_f, D_f) speech-model features of the window (an ExternalFeatureAdapter front end),
      or "audio_tokens" (B, T, audio_dim); "motion" (B, T, 58) normalised target; "history" (B, H, 58);
      "style" (B, num_style); optional "reference" (B, T_ref, ref_dim), "history_valid" (B,) bool,
      "reference_valid" (B,) bool, "audio_valid" (B, T) bool, "mask" (B, T).
    rng: PRNG key.
    x0_loss: optional extra term on the predicted clean motion (an x0-predicting DiT), e.g. `curve_loss`.

  Returns:
    () float32.
  """
  t_win = batch["motion"].shape[1]
  if "audio_tokens" in batch:
    audio = batch["audio_tokens"]
  else:
    x = batch["mel"] if "mel" in batch else batch["features"]
    audio = model.audio.apply({"params": params["audio"]}, x, num_tokens=t_win)  # (B, T, Da)
  loss_batch = {k: batch[k] for k in _FACE_KEYS if k in batch}
  loss_batch["audio"] = audio
  return face_motion_loss(params["face"], loss_batch, rng, model=model.dit, schedule=schedule,
                          x0_loss=x0_loss)


def curve_loss(pred_x0: jax.Array, x0: jax.Array, mask: jax.Array | None, *,
               curve: Callable[[jax.Array], jax.Array], weight: float) -> jax.Array:
  """weight · mean squared error of a per-frame curve of the predicted clean motion against the same curve
  of the target, in units of the target curve's variance over the batch's counted frames (scale-free: the
  same weight serves curves of any unit).

  The lip loss of the face model (`config.mouth_loss_weight`): curve = the mouth opening of the
  de-normalised expression (`chatanyone_jax.template.mouth_opening`). The x0 loss spreads its weight
  over all 58 dimensions, of which the inner-lip gap is one direction: the one the audio decides and a
  viewer judges first.

  Args:
    pred_x0, x0: (B, T, D) normalised motion; mask: (B, T, 1) counted frames or None.
    curve: (B, T, D) -> (B, T).

  Returns:
    () float32.
  """
  a, b = curve(pred_x0.astype(jnp.float32)), curve(x0.astype(jnp.float32))
  w = jnp.ones_like(b) if mask is None else jnp.broadcast_to(mask[..., 0].astype(jnp.float32), b.shape)
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(b * w) / n
  var = jnp.sum(jnp.square(b - mean) * w) / n
  return weight * (jnp.sum(jnp.square(a - b) * w) / n) / (var + 1e-8)


def body_batch_loss(params, batch: dict, rng: jax.Array, *, model: UpperBodyMotion,
                    schedule: NoiseSchedule) -> jax.Array:
  """ε-loss (or x0-loss, model.config.prediction) of one upper-body batch (no condition dropout).

  batch: "target" (B, T, layout.dim) packed normalised target, "head_kp" (B, T, K_h, 3),
  "audio" (B, T, audio_dim), "appearance" (B, N_app, app_dim); optional "mask" (B, T).
  """
  eps_fn = lambda x, t: model.apply({"params": params}, x, t, batch["head_kp"], batch["audio"],
                                    batch["appearance"])
  mask = batch.get("mask")
  return diffusion_loss(schedule, eps_fn, batch["target"], rng, None if mask is None else mask[..., None],
                        prediction=model.config.prediction)


# --------------------------------------------------------------------------------------------- windows


def motion_windows(motion: np.ndarray, audio: np.ndarray, *, window: int = 40, history: int = 10,
                   stride: int = 10, audio_rate: float | None = None, fps: float = 30.0,
                   clip_start: bool = True) -> dict[str, np.ndarray]:
  """Cuts one clip into training windows (host-side NumPy, for the data pipeline).

  Window w covers frames [s_w, s_w + window) with s_w = s_0 + w · stride (s_0 = 0 with clip_start,
  else `history`; only whole windows). Its history is frames [s_w - history, s_w); windows that start
  before frame `history` get zero history and history_valid False (the model then uses its learned
  null history, as for the first window at inference).

  Audio: with audio_rate None, `audio` holds one feature row per video frame (e.g. audio tokens) and
  the window takes the same frames. Otherwise `audio` runs at audio_rate rows per second (100 for the
  default log-mel) and every window takes round(window · audio_rate / fps) rows from
  round(s_w · audio_rate / fps), edge-padded past the end; the last row's rounding is < 0.5 row.

  Args:
    motion: (N, D) per-frame motion (e.g. normalised 52 β + 6 pose).
    audio: (N, Da) per-frame features, or (N_a, Da) at audio_rate.

  Returns:
    "motion" (W, window, D), "history" (W, history, D), "history_valid" (W,) bool,
    "audio" (W, window or window_audio, Da), "start" (W,) int32 first frame of each window.
  """
  motion = np.asarray(motion)
  audio = np.asarray(audio)
  n = motion.shape[0]
  first = 0 if clip_start else history
  starts = np.arange(first, n - window + 1, stride, dtype=np.int32)
  if starts.size == 0:
    raise ValueError(f"clip of {n} frames has no whole window of {window} (+{history} history) frames")
  idx = starts[:, None] + np.arange(window)[None]  # (W, T)
  hist_idx = starts[:, None] - history + np.arange(history)[None]  # (W, H)
  valid = starts >= history
  hist = np.where(valid[:, None, None], motion[np.maximum(hist_idx, 0)], 0.0).astype(motion.dtype)
  if audio_rate is None:
    if audio.shape[0] < n:
      raise ValueError(f"per-frame audio has {audio.shape[0]} rows for {n} frames")
    audio_w = audio[idx]
  else:
    ratio = audio_rate / fps
    length = int(round(window * ratio))
    a0 = np.round(starts * ratio).astype(np.int64)
    a_idx = np.minimum(a0[:, None] + np.arange(length)[None], audio.shape[0] - 1)
    audio_w = audio[a_idx]
  return {"motion": motion[idx], "history": hist, "history_valid": valid, "audio": audio_w,
          "start": starts}


def num_windows(num_frames: int, window: int = 40, history: int = 10, stride: int = 10,
                clip_start: bool = True) -> int:
  """How many windows `motion_windows` cuts from a clip of num_frames frames."""
  first = 0 if clip_start else history
  return max(0, math.floor((num_frames - window - first) / stride) + 1)
