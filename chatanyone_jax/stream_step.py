"""The streaming step: one block of audio -> the next hop video frames (pure JAX).

`make_stream_step(spec)` returns `step(params, state, audio_block) -> (state, frames)`, jitted with
the state donated, one compiled program per `StreamSpec` (`chatanyone_jax.stream_spec`);
`make_init_state(spec)` builds the state of one avatar (its renderer features, computed once). The
stages of a window are listed in `stream_step`, the state's layout and keypoint conventions in
`init_state`. The host side (portrait landmarks, crops, checkpoints, re-blocking of audio chunks) is
`infer.streaming`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax import xla_options
from chatanyone_jax.audio import whisper
from chatanyone_jax.audio.melspec import log_mel_spectrogram
from chatanyone_jax.motion.diffusion import cosine_schedule, ddim_sample
from chatanyone_jax.motion.face_motion_dit import NUM_EXP
from chatanyone_jax.motion.lip_regressor import mouth_from_speech
from chatanyone_jax.motion.sampling import FaceConditions, anchored_noise, join_window, sample_window
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.face_refine import crop_frames, mask_face, paste_back, polygon_mask
from chatanyone_jax.render.keypoints import control_keypoints
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.presets import RendererConfig
from chatanyone_jax.render.spade_generator import SPADEDecoder, skip_inputs
from chatanyone_jax.render.warping_network import WarpingNetwork
from chatanyone_jax.stream_spec import RENDER_DTYPES, StreamSpec
from chatanyone_jax.template.hands import decode_hands, palm_size, render_hands
from chatanyone_jax.template.head_template import project, project_keypoints

State = dict[str, Any]
Params = dict[str, Any]

# MediaPipe face-mesh face oval (FACEMESH_FACE_OVAL) as one closed loop: the outline of the face, used
# as the face mask of the refine pass (the training masks are the convex hull of the mesh, whose outer
# boundary this loop is).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


# ----------------------------------------------------------------------------------------------- helpers


def _affine(points: jax.Array, a: jax.Array) -> jax.Array:
  """(..., 3) * a[0] + a[1]: body units -> a crop's grid units (per-axis affine from the host)."""
  return points * a[0] + a[1]


def _apply(module: nn.Module, variables: dict, name: str, *args, **kwargs) -> Any:
  """A renderer part in inference mode with its params / batch_stats (as `render.train_step.reconstruct`)."""
  v = {"params": variables["params"][name]}
  stats = variables.get("batch_stats", {}).get(name)
  if stats:
    v["batch_stats"] = stats
  return module.apply(v, *args, **kwargs)


def _nets(cfg: RendererConfig, dtype=None) -> dict[str, nn.Module]:
  return {"F": AppearanceFeatureExtractor(cfg.appearance_feature_extractor, dtype=dtype),
          "M": MotionExtractor(cfg.motion_extractor, dtype=dtype),
          "W": WarpingNetwork(cfg.warping_network, dtype=dtype),
          "G": SPADEDecoder(cfg.spade_generator, dtype=dtype)}


def render_frames(cfg: RendererConfig, variables: dict, volume: jax.Array, kp_source: jax.Array,
                  kp_driving: jax.Array, inject: jax.Array | None, batch: int | None,
                  dtype: str = "float32", source: jax.Array | None = None) -> jax.Array:
  """The renderer's per-frame part, G(W(volume, kp_driving, kp_source)[, inject]), for T frames.

  Args:
    cfg: the renderer's preset; variables: its {"params", "batch_stats"} of F, M, W, G.
    volume: (1, ...) F's appearance volume of the source; kp_source: (1, K, 3) its control keypoints.
    kp_driving: (T, K, 3) control keypoints of the frames to render.
    inject: optional (T, Hi, Wi, 3) G's injection image (hands, or the face-masked head crop).
    batch: frames per W + G call (`lax.map` groups, bounds memory); None = all T at once.
    dtype: compute dtype of W and G, "float32" or "bfloat16" (parameters stay float32).
    source: (1, H, W, 3) the source image F saw; required by a G with the source skip.

  Returns:
    (T, Ho, Wo, 3) float32 frames in [0, 1].
  """
  nets = _nets(cfg, RENDER_DTYPES[dtype])

  def frames(args):
    kp_d, inj = args
    b = kp_d.shape[0]
    vol, kp_s = (jnp.broadcast_to(x, (b,) + x.shape[1:]) for x in (volume, kp_source))
    warped = _apply(nets["W"], variables, "W", vol, kp_d, kp_s)
    skip = skip_inputs(cfg.spade_generator, source, warped) if source is not None else {}
    return _apply(nets["G"], variables, "G", warped["out"], inj, **skip).astype(jnp.float32)

  if batch is None or batch >= kp_driving.shape[0]:
    return frames((kp_driving, inject))
  # lax.map over single frames (batch_size groups them): the per-frame function sees no batch axis.
  return jax.lax.map(lambda a: frames(jax.tree.map(lambda x: x[None], a))[0], (kp_driving, inject),
                     batch_size=batch)


def to_uint8(images: jax.Array) -> jax.Array:
  """[0, 1] float images -> uint8 (round to nearest)."""
  return jnp.clip(jnp.round(images * 255.0), 0, 255).astype(jnp.uint8)


# ----------------------------------------------------------------------------------------------- state


def init_state(spec: StreamSpec, params: Params, avatar: dict[str, jax.Array], key: jax.Array) -> State:
  """The stream state of one avatar: renderer features of the source, computed once.

  Args:
    spec: the step's static description.
    params: as `make_stream_step`.
    avatar: host-prepared inputs (`infer.avatar.prepare_avatar`):
      "image" (1, Hi, Wi, 3) in [0, 1]: the main renderer's source crop (body crop for "upper", head
        crop for "head") at renderer.image_size;
      "pose" (1, 6) (degrees, body units), "scale" (1,), "exp" (1, 52), "identity" (1, n_id): the
        portrait's head-template fit;
      "kp_affine" (2, 3): body units -> grid units of the main crop;
      "style" (1, 2) style controls; optional "reference" (1, T_ref, ref_dim) normalised;
      upper: "appearance" (1, N_app, app_dim) appearance embedding;
      upper with refine: "refine_image" (1, Hr, Wr, 3) the head crop at refine.image_size,
        "refine_affine" (2, 3) body units -> head-crop grid units, "refine_box" (1, 4) the head box in
        output-frame pixels.
    key: PRNG key of the stream.

  Returns:
    The state, a pytree donated to every step call:
      window: () int32 index i of the next step (and of the window it generates, frames
        [i · hop, i · hop + T)); the window's key is fold_in(rng, i).
      audio: the carried audio (`advance_audio`): the last samples before the step's new audio (the
        front ends' left context and the look-ahead already received; zeros before the stream starts)
        and the rounding phases of `stream_spec.step_bounds`.
      history: (1, H, 58) the last H emitted frames of normalised face motion; history_valid (1,)
        bool (False before the first window: FaceMotionDiT then uses its learned null history). Each
        new face-motion window is joined to the history by `join_window` over spec.seam_frames frames.
      body_history (upper, hop < T): (1, 2, body dim) the last two emitted frames of normalised body
        motion, to which each new body window is joined the same way.
      rng: PRNG key.
      style: (1, 2) FaceMotionDiT style controls (expression amplitude, head-pose range; may be changed
        between calls); lip_gain (1,) (with spec.lip): the amplitude multiplier of the lip regressor's
        mouth (avatar "lip_gain", default 1; `lip_regressor.mouth_from_speech`).
      reference: optional (1, T_ref, ref_dim) normalised reference expression sequence; reference_valid
        (1,) bool (False: no reference video, zeros in `reference`, and a model with the reference
        input uses its learned null reference; both absent for a model without that input).
      avatar: the source's precomputed tensors (volume, kp_source, ...; see Keypoints).

  Keypoints (`chatanyone_jax.render.keypoints.control_keypoints`). Face coefficients and the template
  pose translation are in body units (`data.preprocess`); the avatar's affine maps take body units to
  the grid units of each renderer's crop ("kp_affine", "refine_affine": (2, 3) = per-axis scale,
  offset). Layout "hybrid_body" (upper renderer): X_full = head-template keypoints (body-crop grid)
  ⊕ X_body with X_body = s (x_c + δ) + t, where x_c = (X_body_src - t_src) / s_src are the source's
  body keypoints (M on the source, R = I) in the head's frame, the inverse of how
  `train.tasks.MotionBody` builds its δ target from the first frame, and t_src / s_src the source's
  template translation / scale; δ = 0, s = s_src, t = t_src reproduce the source keypoints exactly.
  Layout "head_offset" (head renderer, face refine): X = head-template keypoints (head-crop grid) +
  ΔX_src (M on the source crop). UpperBodyMotion's ΔX_head output is not used: `train.tasks.MotionBody`
  trains it on zeros (the records hold no stage-2 offsets), so its samples are noise, in grid units of
  the order of 1 where its normalisation keeps the unit scale of a constant target.
  The head-template keypoints use the source's template scale (FaceMotionDiT predicts pose and
  expression, not scale).
  """
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  tmpl = params["template"]
  src = {k: f32(avatar[k]) for k in ("pose", "scale", "exp", "identity")}
  head_units = project_keypoints(tmpl, src["pose"], src["scale"], src["exp"], src["identity"])  # (1, 32, 3)
  rvars = params["render"]
  nets = _nets(spec.renderer)
  image = f32(avatar["image"])
  volume = _apply(nets["F"], rvars, "F", image)
  m_out = _apply(nets["M"], rvars, "M", image)
  kp_affine = f32(avatar["kp_affine"])
  kp_head = _affine(head_units, kp_affine)
  kp_source, implicit, _ = control_keypoints(spec.renderer, m_out, kp_head)
  av = {"volume": volume, "kp_source": kp_source, "kp_affine": kp_affine, "source_image": image, **src}
  if spec.mode == "upper":
    t_src = src["pose"][:, None, 3:6]  # (1, 1, 3)
    s_src = src["scale"][:, None, None]
    av["body_canonical"] = (implicit - t_src) / s_src  # (1, K_b, 3) x_c in the head's frame
    av["appearance"] = f32(avatar["appearance"])
  else:
    av["head_offset"] = implicit  # ΔX_src (1, 32, 3)
  if spec.refine is not None:
    fnets = _nets(spec.refine)
    fvars = params["face_refine"]
    r_image = f32(avatar["refine_image"])
    r_affine = f32(avatar["refine_affine"])
    r_out = _apply(fnets["M"], fvars, "M", r_image)
    r_kp, r_offset, _ = control_keypoints(spec.refine, r_out, _affine(head_units, r_affine))
    av.update(refine_volume=_apply(fnets["F"], fvars, "F", r_image), refine_kp_source=r_kp,
              refine_image=r_image, refine_head_offset=r_offset, refine_affine=r_affine,
              refine_box=f32(avatar["refine_box"]))
  h = spec.history
  state = {
      "window": jnp.zeros((), jnp.int32),
      "audio": init_audio_state(spec),
      "history": jnp.zeros((1, h, spec.face.config.motion_dim), jnp.float32),
      "history_valid": jnp.zeros((1,), bool),
      **({"body_history": jnp.zeros((1, 2, spec.body.config.layout.dim), jnp.float32)}
         if spec.mode == "upper" and spec.step_frames < spec.window else {}),
      "rng": key,
      "style": f32(avatar["style"]).reshape(1, -1),
      "avatar": av,
  }
  if spec.lip is not None:  # the style's amplitude multiplier for the lip regressor's mouth
    state["lip_gain"] = f32(avatar.get("lip_gain", 1.0)).reshape(1)
  if avatar.get("reference") is not None:
    state["reference"] = f32(avatar["reference"])
    state["reference_valid"] = jnp.ones((1,), bool)
  elif "ref_proj" in params["motion_face"]["params"]["face"]:
    # A model with the reference input and no reference video: its learned null reference.
    state["reference"] = jnp.zeros((1, spec.window, spec.face.config.ref_dim), jnp.float32)
    state["reference_valid"] = jnp.zeros((1,), bool)
  return state


def make_init_state(spec: StreamSpec):
  """`init_state` jitted for one spec: init(params, avatar, key) -> state (cached per spec)."""
  return _cached_init(spec)


@functools.lru_cache(maxsize=8)
def _cached_init(spec: StreamSpec):
  return jax.jit(functools.partial(init_state, spec), compiler_options=xla_options.cpu_options())


# ----------------------------------------------------------------------------------------------- step


def _advance(residue: jax.Array, frames, spf) -> tuple[jax.Array, jax.Array]:
  """(b(f + frames) - b(f), residue of f + frames) from residue = (2 f p + q) mod 2q for spf = p / q.

  b(f) = round(f · spf) (`stream_spec.frame_sample`); the carried phase keeps the integers small.
  """
  p, q = spf.numerator, spf.denominator
  z = residue + 2 * frames * p
  return z // (2 * q), z % (2 * q)


def tail_samples(spec: StreamSpec) -> int:
  """K: audio samples the state carries before the next step's first new sample.

  Enough for the look-ahead already received past the window start (the lead, at most ceil(L · spf))
  plus the front ends' left context before it: the speech encoder's speech_context, the log-mel's
  n_fft - 1 samples before the first frame (and the frame's phase).
  """
  lead = -(-spec.lookahead * spec.spf.numerator // spec.spf.denominator)
  return max(spec.speech_context, spec.mel.n_fft) + lead + 1


def init_audio_state(spec: StreamSpec) -> dict[str, jax.Array]:
  """The audio state of a new stream: silence before it, window 0 starts at sample 0."""
  q = lambda: jnp.full((), spec.spf.denominator, jnp.int32)  # separate buffers: the state is donated
  return {"tail": jnp.zeros((tail_samples(spec),), jnp.float32), "lead": jnp.zeros((), jnp.int32),
          "phase": jnp.zeros((), jnp.int32), "residue": q(), "residue_end": q()}


def advance_audio(spec: StreamSpec, audio: dict[str, jax.Array], i: jax.Array,
                  block: jax.Array) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
  """Takes step i's new samples (the first c_{i+1} - c_i of `block`, `stream_spec.step_bounds`).

  The carried state: "tail" (K,) the last K samples before c_i (zeros before the stream), "lead"
  c_i - a_i with a_i = b(i · hop) the first sample of window i, "phase" a_i mod the mel hop, and the
  rounding phases "residue" of a_i and "residue_end" of c_i.

  Returns (the state of step i + 1, x, s): x holds the tail, the new samples and zeros after them
  (audio not arrived yet: silence), and window i's first sample a_i is x[s].
  """
  hop, look = spec.step_frames, spec.lookahead
  k, w = tail_samples(spec), spec.window_samples
  n, residue_end = _advance(audio["residue_end"], hop + jnp.where(i == 0, look, 0), spec.spf)
  a, residue = _advance(audio["residue"], hop, spec.spf)
  x = jnp.concatenate([audio["tail"], block.astype(jnp.float32), jnp.zeros((w,), jnp.float32)])
  x = jnp.where(jnp.arange(x.shape[0]) < k + n, x, 0.0)  # the block's padding is ignored
  new = {"tail": jax.lax.dynamic_slice_in_dim(x, n, k), "lead": audio["lead"] + n - a,
         "phase": (audio["phase"] + a) % spec.mel.hop_length, "residue": residue, "residue_end": residue_end}
  return new, x, k - audio["lead"]


def window_mel(spec: StreamSpec, x: jax.Array, start: jax.Array, phase: jax.Array) -> jax.Array:
  """Log-mel of window i: (M, n_mels), whole-clip "causal" frames [floor(a_i / hop), + M).

  x[start] is the window's first sample a_i and phase = a_i mod hop (`advance_audio`); the frames read
  x from floor(a_i / hop) · hop - (n_fft - hop) on (zeros before the stream, as the causal padding).
  M = spec.num_mel, the count of round(T · sr / fps) samples, i.e. exactly what the training windows
  have (`train.tasks`, `_window_audio`). Differences from training: training frames the window's audio
  alone (zero left context) and starts it at a_i exactly; here the first frames see the audio before
  the window and the start is up to one hop (10 ms) earlier; with hop < T the audio after the
  look-ahead is silence (training windows are speech to their end).
  """
  cfg, hl, m = spec.mel, spec.mel.hop_length, spec.num_mel
  seg = jax.lax.dynamic_slice_in_dim(x, start - phase - (cfg.n_fft - hl), (m - 1) * hl + cfg.n_fft)
  return log_mel_spectrogram(seg, dataclasses.replace(cfg, padding="valid"))


def window_speech(spec: StreamSpec, params: Params, x: jax.Array, start: jax.Array
                  ) -> tuple[jax.Array, jax.Array | None]:
  """Speech-encoder features of window i: (the face model's (1, n, D), the lip regressor's (1, n, D) or None
  without one), from one pass of the encoder (the lip regressor may read one of its blocks,
  `LipRegressor.speech_layer`).

  The encoder reads speech_context samples before a_i = x[start] (zeros before the stream) followed by
  the window's first W = round(T · spf) samples, as the training windows were cached
  (`data.speech_features`; `whisper.window_features`); with hop < T the samples after the look-ahead
  are silence (a train / inference difference: training windows are speech to their end).
  """
  c = spec.speech_context
  seg = jax.lax.dynamic_slice_in_dim(x, start - c, c + spec.window_samples)
  layers = (None,) if spec.lip is None else (None, spec.lip.speech_layer)
  out = whisper.window_layers(spec.speech, params["motion_face"]["speech"], seg[None], c, layers)
  return out[0], (out[1] if spec.lip is not None else None)


def face_window(spec: StreamSpec, params: Params, state: State,
                audio_block: jax.Array) -> tuple[State, jax.Array, jax.Array, jax.Array]:
  """The audio and face-motion stages of step i (`stream_step`), shared with `motion_step`.

  Returns (the state fields of step i + 1: window, audio, history, history_valid; (1, M, n_mels) the
  window's log-mel; (1, T, 58) the joined normalised face-motion window, whose first hop frames are
  emitted; the body sampler's PRNG key).
  """
  t_win, hop = spec.window, spec.step_frames
  i = state["window"]
  audio_state, x, start = advance_audio(spec, state["audio"], i, audio_block)
  mel = window_mel(spec, x, start, state["audio"]["phase"])[None]  # (1, M, n_mels)
  key = jax.random.fold_in(state["rng"], i)
  k_face, k_body = jax.random.split(key)
  pf = params["motion_face"]
  # (1, M | n, ...): the face model's input, and the lip regressor's features
  face_in, lip_in = (mel, None) if spec.speech is None else window_speech(spec, params, x, start)
  tokens = spec.face_audio.apply({"params": pf["params"]["audio"]}, face_in, num_tokens=t_win)  # (1, T, Da)
  cond = FaceConditions(tokens, state["history"], state["style"], state.get("reference"),
                        state["history_valid"], state.get("reference_valid"), spec.heard_frames())
  # With hop < T the windows overlap: each frame starts from its own noise in every window that holds it
  # (`anchored_noise`), not from fresh noise per window (which made the emitted frames come from unrelated
  # samples: more frame-to-frame motion, benchmarks/RESULTS.md "Face motion of the stream").
  x_T = None if hop >= t_win else anchored_noise(
      jax.random.fold_in(state["rng"], 0x7FFFFFFF), i * hop, t_win, spec.face.config.motion_dim)
  sampler = dict(num_steps=spec.num_steps, guidance_scale=spec.guidance_scale, eta=spec.eta,
                 clip_x0=spec.clip_x0, noise_scale=spec.noise_scale)
  motion_n = sample_window(spec.face, pf["params"]["face"], cond, k_face, x_T=x_T,
                           schedule=cosine_schedule(spec.face_diffusion_steps), **sampler)
  if spec.lip is not None:
    motion_n = mouth_from_speech(spec.lip, params["motion_lip"], pf["norm"], lip_in, motion_n,
                                 float(spec.fps), state.get("lip_gain", 1.0))
  motion_n = join_window(state["history"], motion_n, min(spec.seam_frames, t_win), state["history_valid"])
  history = jnp.concatenate([state["history"], motion_n[:, :hop]], axis=1)[:, -spec.history:]
  new = {"window": i + 1, "audio": audio_state, "history": history, "history_valid": jnp.ones((1,), bool)}
  return new, mel, motion_n, k_body


def init_motion_state(spec: StreamSpec, style: jax.Array, key: jax.Array, reference: jax.Array | None = None,
                      reference_valid: bool = True) -> State:
  """The state `motion_step` needs (the face-motion part of `init_state`, no avatar): style (1, 2),
  optional reference (1, T_ref, ref_dim) normalised (None for a model without the reference input; a
  model with it and no reference video: zeros and reference_valid False, its learned null reference)."""
  state = {"window": jnp.zeros((), jnp.int32), "audio": init_audio_state(spec),
           "history": jnp.zeros((1, spec.history, spec.face.config.motion_dim), jnp.float32),
           "history_valid": jnp.zeros((1,), bool), "rng": key,
           "style": jnp.asarray(style, jnp.float32).reshape(1, -1)}
  if reference is not None:
    state["reference"] = jnp.array(reference, jnp.float32)  # a copy: the state is donated
    state["reference_valid"] = jnp.full((1,), reference_valid, bool)
  return state


def motion_step(spec: StreamSpec, params: Params, state: State,
                audio_block: jax.Array) -> tuple[State, jax.Array]:
  """The face motion of one stream step without rendering: (state, (1, hop, 58) normalised motion).

  The frames' motion of `stream_step` exactly (same audio blocks, keys, history and join), for evaluating
  lip sync and seams of a hop setting (`benchmarks/latency_bench.py --motion`). Jit it.
  """
  new, _, motion_n, _ = face_window(spec, params, state, audio_block)
  return {**state, **new}, motion_n[:, :spec.step_frames]


def stream_step(spec: StreamSpec, params: Params, state: State,
                audio_block: jax.Array) -> tuple[State, jax.Array]:
  """One step: audio_block (block_samples(spec),) float32 16 kHz -> (state, (hop, Ho, Wo, 3) uint8).

  The first c_{i+1} - c_i samples of audio_block are step i's audio (`stream_spec.step_bounds`); the
  rest is padding. Step i generates motion window i, frames [i · hop, i · hop + T), whose history is
  the last H emitted frames, and emits its first hop frames (hop = T: whole windows); the window's
  audio after the look-ahead has not arrived and is silence. Pure; `make_stream_step` jits it with the
  state donated. The stages:

    audio block ─► window audio (`advance_audio`) ─► log-mel (`window_mel`) ─► AudioEncoder tokens (face
      and body model's; a face model with a speech encoder: Whisper features of the window,
      `window_speech`, ─► its adapter)
      ─► FaceMotionDiT DDIM window (history = last H frames, style, reference) ─► [spec.lip] the mouth
         from the lip regressor on the same pass's features (`lip_regressor.mouth_from_speech`)
      ─► `join_window`
      ─► first hop frames ─► de-normalise ─► head-template keypoints (`project_keypoints`)
      ─► [upper] UpperBodyMotion DDIM window (head keypoints of the whole window; with hop < T joined
         to the emitted body motion by `join_window`) ─► ΔX_head, body δ, s, t, hands ─► X_full ─► W ─► G
      ─► [upper, refine] head crop of the frame ─► refine W / G ─► `paste_back`
      ─► uint8 frames (hop, H, W, 3)
  """
  t_win, hop = spec.window, spec.step_frames
  av = state["avatar"]
  face_state, mel, motion_n, k_body = face_window(spec, params, state, audio_block)
  pf = params["motion_face"]
  motion = motion_n * pf["norm"]["motion_std"] + pf["norm"]["motion_mean"]  # (1, T, 58)
  exp, pose = motion[0, :, :NUM_EXP], motion[0, :, NUM_EXP:]  # (T, 52), (T, 6)
  ident = jnp.broadcast_to(av["identity"], (t_win, av["identity"].shape[-1]))
  scale = jnp.broadcast_to(av["scale"], (t_win,))
  head_units = project_keypoints(params["template"], pose, scale, exp, ident)  # (T, 32, 3) body units
  kp_head = _affine(head_units, av["kp_affine"])  # (T, 32, 3) grid units of the main crop
  body_state = {}

  rvars = params["render"]
  hi, wi = spec.renderer.image_size
  if spec.mode == "upper":
    # --- Stage 1b: upper body (ΔX_head, δ, s, t, hands) of the whole window; the first hop frames are used.
    pb = params["motion_body"]
    layout = spec.body.config.layout
    body_tokens = spec.body_audio.apply({"params": pb["params"]["audio"]}, mel, num_tokens=t_win)

    denoise = lambda x, t: spec.body.apply({"params": pb["params"]["body"]}, x, t, kp_head[None], body_tokens,
                                           av["appearance"])
    target_n = ddim_sample(denoise, cosine_schedule(spec.body_diffusion_steps), (1, t_win, layout.dim),
                           k_body, num_steps=spec.num_steps, eta=spec.eta, clip_x0=spec.clip_x0,
                           prediction=spec.body.config.prediction)
    if hop < t_win:  # a new body window every hop: join it to the body motion emitted before
      target_n = join_window(state["body_history"], target_n, min(spec.seam_frames, t_win),
                             state["history_valid"])
      body_state = {"body_history": jnp.concatenate([state["body_history"], target_n[:, :hop]], 1)[:, -2:]}
    parts = layout.unpack((target_n[:, :hop] * pb["norm"]["target_std"] + pb["norm"]["target_mean"])[0])
    body = parts["scale"][:, :, None] * (av["body_canonical"] + parts["body_delta"]) \
        + parts["translation"][:, None, :]  # (hop, K_b, 3)
    kp_driving = jnp.concatenate([kp_head[:hop], body], axis=1)  # X_full (hop, 53, 3)
    hand_lm, present = decode_hands(parts["hands"], (hi, wi))  # (hop, 2, 21, 3) pixels of the input crop
    radius = jnp.maximum(spec.hand_radius * palm_size(hand_lm), spec.hand_min_radius * wi)
    hands = render_hands(hand_lm, present, hi, wi, radius_px=radius)  # (hop, Hi, Wi, 3)
    inject = hands if spec.renderer.spade_generator.hand_injection else None
  else:
    kp_driving = kp_head[:hop] + av["head_offset"]
    inject = None
  frames = render_frames(spec.renderer, rvars, av["volume"], av["kp_source"], kp_driving, inject,
                         spec.render_batch, spec.render_dtype, av["source_image"])  # (hop, Ho, Wo, 3)

  if spec.refine is not None:
    # --- Face refine on the head crop of the emitted frames, pasted back.
    hr, wr = spec.refine.image_size
    box = jnp.broadcast_to(av["refine_box"], (hop, 4))
    crop = crop_frames(frames, box, (hr, wr))  # (hop, Hr, Wr, 3)
    oval = project(params["template"], pose[:hop], scale[:hop], exp[:hop], ident[:hop],
                   indices=jnp.asarray(FACE_OVAL))
    oval = _affine(oval, av["refine_affine"])[..., :2]  # head-crop grid units
    oval_px = (oval + 1.0) * 0.5 * jnp.asarray([wr, hr], jnp.float32)
    background = mask_face(crop, polygon_mask(oval_px, (hr, wr)))
    kp_r = _affine(head_units[:hop], av["refine_affine"]) + av["refine_head_offset"]  # not ΔX_head (above)
    refined = render_frames(spec.refine, params["face_refine"], av["refine_volume"], av["refine_kp_source"],
                            kp_r, background, spec.render_batch, spec.render_dtype, av["refine_image"])
    frames = paste_back(frames, refined, box, spec.refine_feather)

  return {**state, **face_state, **body_state}, to_uint8(frames)


def make_stream_step(spec: StreamSpec):
  """`stream_step` for `spec`, jitted with the state donated: step(params, state, audio_block).

  params: {"motion_face": {"params": {"audio", "face"}, "norm": {"motion_mean", "motion_std"}, "speech"
  (spec.speech): the frozen encoder's variables},
  "motion_body" (upper): {"params": {"audio", "body", "appearance"}, "norm": {"target_mean",
  "target_std"}}, "render": {"params": {"F", "M", "W", "G"}, "batch_stats": {...}}, "face_refine"
  (with spec.refine): the same layout, "template": the `HeadTemplate`}. Cached per spec, so every
  stream of the same spec shares one compiled step.
  """
  return _cached_step(spec)


@functools.lru_cache(maxsize=8)
def _cached_step(spec: StreamSpec):
  return jax.jit(functools.partial(stream_step, spec), donate_argnums=1,
                 compiler_options=xla_options.cpu_options())
