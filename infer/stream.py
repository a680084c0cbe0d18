"""`stream(image, audio_chunks, ...)`: a portrait and arriving speech -> video frames, as a generator.

  frames = stream("portrait.jpg", chunks, checkpoint="runs/")   # chunks: 1-D float32 arrays, 16 kHz mono
  for frame in frames:                                          # (H, W, 3) uint8, 30 fps, in order
    ...

Audio chunks may have any lengths; they are re-blocked into the step's windows of T video frames
(`chatanyone_jax.stream.window_bounds`: window i takes samples [round(i T 16000 / 30), round((i + 1) T
16000 / 30))), so a window's frames are yielded as soon as its audio has arrived (latency: one window,
T / 30 s, plus the step). At the end the last partial window is zero-padded and only its real frames
are yielded: a clip of S samples gives round(S · 30 / 16000) frames. The same audio cut into different
chunks gives the same frames.

The avatar is prepared once, as preprocessing annotates training clips (`data.preprocess`): MediaPipe
landmarks of the portrait (`data.landmarks.extract_landmarks` on a one-frame clip), then
`data.preprocess.annotate_clip` (head-template fit in body units, head / body boxes, keypoints) and the
crops at each renderer's input size; then `chatanyone_jax.stream.init_state` (F volume, source keypoints,
appearance embedding). One jitted step per window does the rest (`chatanyone_jax.stream`).

Models. `checkpoint` is a directory of `python -m train.main` workdirs:
  motion_face/   AudioEncoder + FaceMotionDiT (train/configs/motion_face.py)
  motion_body/   UpperBodyMotion (train/configs/motion_body.py)           [mode "upper"]
  render/        the renderer: an upper512x768-family preset for mode "upper", head512-family for "head"
  face_refine/   optional: the face-refine renderer (face_refine / tiny_face_refine preset) [mode "upper"]
Without a checkpoint, pass `params` and `configs` (same keys; `random_params` builds random tiny ones
for tests and smoke runs).

Style. `amplitude` and `pose_range` scale FaceMotionDiT's style controls (`style_controls`: expression
amplitude, head-pose range of a window of normalised motion). The base they scale is the style of the
reference window when `reference_video` is given, else `DEFAULT_STYLE`: the median style of windows of
the same length over real talking clips (below). 1.0 is a typical speaker; 0 asks for a still face.
"""

from __future__ import annotations

import copy
import dataclasses
import fractions
import functools
import logging
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax import stream as core
from chatanyone_jax.motion.sampling import GUIDANCE_SCALE
from chatanyone_jax.render import presets
from chatanyone_jax.template import load_head_template
from infer.media import MediaError, read_image

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FPS = 30
ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
ASSETS_PORTRAIT = ASSETS / "portrait.jpg"  # bundled real portrait and speech (see assets/NOTICE.md)
ASSETS_SPEECH = ASSETS / "speech.mp3"
MODES = core.MODES
WORKDIRS = ("motion_face", "motion_body", "render", "face_refine")

# Median FaceMotionDiT style controls (expression amplitude, head-pose range) of windows of T frames,
# measured on 5 real talking clips of shared/data/media/videos (LatentSync demo1 / demo2, SadTalker
# WDA_KatieHill, V-Express AOC, video-retalking face_1; first 15 s, 1309 frames, windows every 5
# frames), motion normalised by the statistics of those clips as `train.tasks.MotionFace` normalises
# its windows. Other window lengths interpolate linearly in T (clamped at the ends).
DEFAULT_STYLE_TABLE = (  # (T, amplitude, pose range)
    (8, 0.359, 0.622), (16, 0.467, 1.151), (24, 0.542, 1.490), (32, 0.571, 1.791), (40, 0.597, 2.038),
    (48, 0.618, 2.190), (64, 0.656, 2.425))


def default_style(window: int) -> np.ndarray:
  """(2,) float32 typical style controls of a window of `window` frames (`DEFAULT_STYLE_TABLE`)."""
  t, amp, rng = (np.array(c, np.float64) for c in zip(*DEFAULT_STYLE_TABLE, strict=True))
  return np.array([np.interp(window, t, amp), np.interp(window, t, rng)], np.float32)


class AvatarError(MediaError):
  """The portrait cannot be animated (e.g. no face in it); the message says what to do."""


# ----------------------------------------------------------------------------------------------- models


def _renderer_config(value) -> presets.RendererConfig:
  return presets.get(value) if isinstance(value, str) else value


def _check_renderer(cfg: presets.RendererConfig, mode: str, where: str) -> None:
  layout = presets.keypoint_layout(cfg)
  if layout != core.MODE_LAYOUT[mode]:
    family = "upper512x768" if mode == "upper" else "head512"
    raise ValueError(f"{where} is a {layout!r} renderer but mode {mode!r} needs a {family}-family renderer "
                     f"({core.MODE_LAYOUT[mode]!r} keypoints); pass --mode "
                     f"{'head' if layout == 'head_offset' else 'upper'} or a matching checkpoint")


def _check_refine(cfg: presets.RendererConfig, where: str) -> None:
  if presets.keypoint_layout(cfg) != "head_offset" or not cfg.spade_generator.hand_injection:
    raise ValueError(f"{where} is not a face-refine renderer (want the face_refine / tiny_face_refine "
                     "preset: head keypoints and G's injection branch)")


def load_checkpoint(checkpoint: str | os.PathLike, mode: str = "upper",
                    refine: bool = True) -> tuple[dict, dict]:
  """(params, configs) from a directory of training workdirs (module docstring).

  Raises:
    FileNotFoundError: the directory or a needed workdir is missing (face_refine/ is optional).
    ValueError: a workdir of the wrong task, or a renderer that does not match `mode`.
  """
  from train import checkpoint as ckpt

  root = pathlib.Path(checkpoint)
  if not root.is_dir():
    raise FileNotFoundError(f"checkpoint directory {root} does not exist (it should hold the training "
                            f"workdirs {', '.join(WORKDIRS[:3])} and optionally face_refine)")
  needed = ["motion_face", "render"] + (["motion_body"] if mode == "upper" else [])
  for name in needed:
    if not (root / name).is_dir():
      raise FileNotFoundError(f"{root / name} is missing: mode {mode!r} needs the workdirs {needed} under "
                              f"{root} (train them with `python -m train.main --workdir {root / name} ...`)")
  configs: dict[str, Any] = {}
  for name in ("motion_face", "motion_body"):
    if name in needed:
      cfg = ckpt.load_config(root / name)
      if cfg.get("task") != name:
        raise ValueError(f"{root / name} holds a {cfg.get('task')!r} run, not {name!r}")
      configs[name] = cfg
  preset = ckpt.load_config(root / "render").get("model", {}).get("preset")
  if preset is None:
    raise ValueError(f"{root / 'render'}/config.json names no model.preset: not a renderer workdir")
  configs["render"] = presets.get(preset)
  _check_renderer(configs["render"], mode, f"{root / 'render'} (preset {preset!r})")
  if refine and mode == "upper" and (root / "face_refine").is_dir():
    preset = ckpt.load_config(root / "face_refine").get("model", {}).get("preset")
    configs["face_refine"] = presets.get(preset)
    _check_refine(configs["face_refine"], f"{root / 'face_refine'} (preset {preset!r})")
  params = {}
  for name in configs:
    loaded = ckpt.load_params(root / name)
    keys = ("params", "norm") if name.startswith("motion") else ("params", "batch_stats")
    params[name] = {k: loaded[k] for k in keys}
    log.info("loaded %s (step %d)", root / name, loaded["step"])
  return params, configs


def _perturb_zeros(tree, scale: float, seed: int):
  """Every all-zero leaf (AdaLN-Zero gates, final layers, injection gates, biases) -> N(0, scale²) noise,
  so that an untrained network's output depends on all its inputs."""
  rs = np.random.RandomState(seed)
  f = lambda p: rs.normal(0.0, scale, np.shape(p)).astype(np.float32) if not np.any(np.asarray(p)) else p
  return jax.tree.map(lambda p: np.asarray(f(np.asarray(p))), tree)


def random_params(mode: str = "upper", *, refine: bool = True, seed: int = 0) -> tuple[dict, dict]:
  """Randomly initialised tiny (params, configs) for tests and smoke runs (the output is meaningless).

  Motion: `train/configs/motion_face.py:tiny` / `motion_body.py:tiny` through `train.tasks`
  (`init_params`), with the zero-initialised layers perturbed and normalisation statistics of plausible
  magnitude (small head motion around the usual head position in the body crop). Renderers: presets
  tiny_upper512x768 / tiny_head512 / tiny_face_refine via `render.train_step.create_train_state`.
  configs["clip_x0"] = 3 bounds the samplers' x̂0 (untrained ε is uncalibrated). Cached per arguments
  (fresh containers each call, shared read-only arrays).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  params, configs = _random_params(mode, refine, seed)
  return jax.tree.map(lambda x: x, params), copy.deepcopy(configs)


@functools.lru_cache(maxsize=4)
def _random_params(mode: str, refine: bool, seed: int) -> tuple[dict, dict]:
  import optax

  from chatanyone_jax.render.train_step import create_train_state
  from train import tasks
  from train.configs import motion_body, motion_face

  key = jax.random.key(seed)
  k_face, k_body, k_render, k_refine = jax.random.split(key, 4)
  configs: dict[str, Any] = {"motion_face": motion_face.get_config("tiny")}
  params: dict[str, Any] = {}
  face = tasks.get_task(configs["motion_face"])
  spec = face.batch_spec(1)
  p = jax.jit(lambda k: face.init_params(k, spec))(k_face)
  # 52 exp (unit-variance template coefficients), pitch / yaw / roll in degrees, translation in body units.
  std = np.concatenate([np.full(52, 0.5), [4.0, 4.0, 2.0], [0.02, 0.02, 0.02]]).astype(np.float32)
  mean = np.zeros(58, np.float32)
  mean[52 + 4] = -0.62  # head centre above the body crop centre (PreprocessConfig body_face_y)
  params["motion_face"] = {"params": _perturb_zeros(p, 0.2, seed), "norm": {"motion_mean": mean,
                                                                            "motion_std": std}}
  if mode == "upper":
    configs["motion_body"] = motion_body.get_config("tiny")
    body = tasks.get_task(configs["motion_body"])
    spec = body.batch_spec(1)
    p = jax.jit(lambda k: body.init_params(k, spec))(k_body)
    layout = body.body_config.layout
    sizes = layout.sizes
    mean, std = {}, {}
    for name, size in sizes.items():
      mean[name], std[name] = np.zeros(size, np.float32), np.full(size, 0.01, np.float32)
    mean["scale"][:], std["scale"][:] = 0.3, 0.005
    mean["translation"][:] = [0.0, -0.62, 0.0]
    std["translation"][:] = 0.01
    hands = np.zeros((2, 65), np.float32)
    hands[:, 0] = 0.3  # presence: a hand shows where the sample is > 0.5
    hands[:, 1:4] = [[0.4, 0.6, 0.0], [-0.4, 0.6, 0.0]]  # wrists low in the crop
    hands[:, 4] = 0.25  # palm: an eighth of the crop width
    hand_std = np.full((2, 65), 0.1, np.float32)
    hand_std[:, 0] = 0.3
    mean["hands"], std["hands"] = hands.ravel(), hand_std.ravel()
    params["motion_body"] = {"params": _perturb_zeros(p, 0.2, seed + 1),
                             "norm": {"target_mean": np.concatenate([mean[n] for n in sizes]),
                                      "target_std": np.concatenate([std[n] for n in sizes])}}
  configs["clip_x0"] = 3.0  # untrained ε is uncalibrated: bound x̂0 (in std units) while sampling
  names = {"render": "tiny_upper512x768" if mode == "upper" else "tiny_head512"}
  if refine and mode == "upper":
    names["face_refine"] = "tiny_face_refine"
  for (name, preset), k in zip(names.items(), (k_render, k_refine), strict=False):
    cfg = presets.get(preset)
    gen = create_train_state(cfg, k, (1, *cfg.image_size, 3), optax.adam(1e-3), optax.adam(1e-3))["gen"]
    params[name] = {"params": _perturb_zeros(jax.device_get(gen["params"]), 0.02, seed + 2),
                    "batch_stats": jax.device_get(gen["batch_stats"])}
    configs[name] = cfg
  return params, configs


@functools.lru_cache(maxsize=8)
def _tasks(face_json: str, body_json: str | None):
  """train.tasks objects of the motion configs (cached by their JSON: ConfigDicts are not hashable)."""
  import ml_collections

  from train import tasks

  face = tasks.get_task(ml_collections.ConfigDict(_json_loads(face_json)))
  body = None if body_json is None else tasks.get_task(ml_collections.ConfigDict(_json_loads(body_json)))
  return face, body


def _json_loads(text: str) -> dict:
  import json

  return json.loads(text)


def _json(cfg) -> str:
  return cfg.to_json_best_effort(sort_keys=True)


def build_spec(configs: dict, mode: str, *, num_steps: int = 10, guidance_scale: float = GUIDANCE_SCALE,
               clip_x0: float | None = None, render_batch: int | None = None,
               render_dtype: str = "float32", seam_frames: int = 8) -> core.StreamSpec:
  """The `StreamSpec` of the models in `configs` (motion ConfigDicts, renderer configs or preset names)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  for name in ("motion_face", "render") + (("motion_body",) if mode == "upper" else ()):
    if configs.get(name) is None:
      raise ValueError(f"configs[{name!r}] is missing (mode {mode!r})")
  renderer = _renderer_config(configs["render"])
  _check_renderer(renderer, mode, "configs['render']")
  refine = configs.get("face_refine") if mode == "upper" else None
  refine = None if refine is None else _renderer_config(refine)
  if refine is not None:
    _check_refine(refine, "configs['face_refine']")
  face, body = _tasks(_json(configs["motion_face"]),
                      _json(configs["motion_body"]) if mode == "upper" else None)
  kw = {}
  if body is not None:
    if body.config.window != face.config.window:
      raise ValueError(f"motion_body window {body.config.window} != motion_face window {face.config.window}")
    kw = dict(body=body.model, body_audio=body.audio,
              body_diffusion_steps=int(body.config.model.diffusion_steps))
  return core.StreamSpec(mode=mode, face=face.models.dit, face_audio=face.models.audio, renderer=renderer,
                         refine=refine, face_diffusion_steps=int(face.config.model.diffusion_steps),
                         num_steps=num_steps, guidance_scale=guidance_scale, clip_x0=clip_x0,
                         fps=fractions.Fraction(FPS), render_batch=render_batch, render_dtype=render_dtype,
                         seam_frames=seam_frames, **kw)


# ----------------------------------------------------------------------------------------------- avatar


def _affine_of(fn, what: str) -> np.ndarray:
  """(2, 3) per-axis scale and offset of a map fn: (N, 3) -> (N, 3) that is affine per axis."""
  o = fn(np.zeros((1, 3), np.float32))[0]
  s = fn(np.ones((1, 3), np.float32))[0] - o
  probe = np.random.RandomState(0).normal(size=(8, 3)).astype(np.float32)
  if not np.allclose(fn(probe), probe * s + o, atol=1e-4):
    raise AssertionError(f"{what} is not a per-axis affine map")
  return np.stack([s, o]).astype(np.float32)


def _units_to_frame(points: np.ndarray, body_box: np.ndarray) -> np.ndarray:
  """Body units -> frame pixels: the inverse of `annotate_clip`'s conversion of the template pose."""
  half = (body_box[2] - body_box[0]) / 2
  centre = np.array([(body_box[0] + body_box[2]) / 2, (body_box[1] + body_box[3]) / 2, 0.0], np.float32)
  return points * half + centre


def _annotator():
  from data.preprocess import PreprocessConfig, _Annotator

  # Coordinates (body units, grid units, boxes) do not depend on the crop sizes: small crops keep the
  # annotation's by-products (JPEG crops, masks, hand images) cheap.
  return _Annotator(PreprocessConfig(body_size=(96, 64), head_size=64))


@functools.lru_cache(maxsize=1)
def _cached_annotator():
  return _annotator()


def annotate_image(image: np.ndarray, name: str = "portrait") -> dict[str, np.ndarray]:
  """`data.preprocess.annotate_clip` of a one-frame clip (fit, boxes, keypoints), first row of each array.

  Raises:
    AvatarError: no face in the image.
  """
  from data.landmarks import LandmarkError, extract_landmarks
  from data.preprocess import annotate_clip

  try:
    lm = extract_landmarks(image[None], fps=FPS, segmentation=False, name=name)
  except LandmarkError as e:
    raise AvatarError(f"no face found in {name}: give a portrait photo in which one face is clearly "
                      "visible (frontal or near-frontal, at least ~64 px wide; for mode 'upper' the head "
                      f"and shoulders) ({e})") from e
  spf = SAMPLE_RATE / FPS
  out = annotate_clip(image[None], lm, np.array([0]), np.zeros(int(round(spf)), np.float32), name,
                      _cached_annotator())
  keep = ("exp", "pose", "scale", "head_kp", "head_kp_head", "body_kp", "head_box", "body_box")
  return {k: np.asarray(out[k])[0] for k in keep} | {"identity": np.asarray(out["identity"])}  # (n_id,)


def _reference(path: str | os.PathLike, spec: core.StreamSpec, norm: dict,
               max_seconds: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
  """A reference video -> ((1, T, ref_dim) normalised expression window, (2,) its style controls).

  Preprocessed as training clips are: 30 fps frames, MediaPipe landmarks, `annotate_clip` on the
  longest run of face frames; the window is T frames from its middle (repeated when shorter).
  """
  from chatanyone_jax.motion.face_motion_dit import style_controls
  from data.landmarks import LandmarkError, extract_landmarks
  from data.preprocess import VideoFailure, annotate_clip, face_runs, iter_frames

  try:
    frames = np.stack(list(iter_frames(path, FPS, max_side=640, max_frames=int(max_seconds * FPS))))
    lm = extract_landmarks(frames, fps=FPS, segmentation=False, name=str(path))
  except (VideoFailure, LandmarkError, ValueError) as e:
    raise MediaError(f"cannot use reference video {path}: {e}") from e
  run = max(face_runs(lm.face_valid, 1), key=len)
  clip = annotate_clip(frames, lm, run, np.zeros(int(round(len(run) * SAMPLE_RATE / FPS)), np.float32),
                       "reference", _cached_annotator())
  motion = np.concatenate([clip["exp"], clip["pose"]], -1).astype(np.float32)  # (N, 58)
  t = spec.window
  start = max(0, (len(motion) - t) // 2)
  idx = np.minimum(start + np.arange(t), len(motion) - 1)
  window = (motion[idx] - norm["motion_mean"]) / norm["motion_std"]  # (T, 58)
  style = np.asarray(style_controls(jnp.asarray(window[None])))[0]
  return window[None, :, :spec.face.config.ref_dim], style


def prepare_avatar(image: np.ndarray, spec: core.StreamSpec, params: dict, *, amplitude: float = 1.0,
                   pose_range: float = 1.0, reference_video: str | os.PathLike | None = None,
                   name: str = "portrait") -> dict[str, np.ndarray]:
  """Host-side avatar inputs of `chatanyone_jax.stream.init_state` (see there for the keys)."""
  from data.preprocess import body_units_to_grid, crop, to_crop_pixels, to_grid

  ann = annotate_image(image, name)
  body_box, head_box = ann["body_box"], ann["head_box"]
  main_box = body_box if spec.mode == "upper" else head_box
  size = spec.renderer.image_size
  head_grid = lambda s: (lambda p: to_grid(to_crop_pixels(_units_to_frame(p, body_box), head_box, s), s))
  if spec.mode == "upper":
    kp_affine = _affine_of(lambda p: body_units_to_grid(p, size), "body units -> body grid")
  else:
    kp_affine = _affine_of(head_grid(size), "body units -> head grid")
  avatar = {
      "image": crop(image, main_box, size)[None].astype(np.float32) / 255.0,
      "pose": ann["pose"][None], "scale": ann["scale"][None], "exp": ann["exp"][None],
      "identity": ann["identity"][None], "kp_affine": kp_affine,
  }
  base = default_style(spec.window)
  if reference_video is not None:
    if "ref_proj" not in params["motion_face"]["params"]["face"]:
      raise ValueError("this motion_face model was trained without the reference input "
                       "(use_reference=False): drop the reference video")
    avatar["reference"], base = _reference(reference_video, spec, params["motion_face"]["norm"])
  avatar["style"] = (base * np.array([amplitude, pose_range], np.float32))[None].astype(np.float32)
  if spec.mode == "upper":
    from chatanyone_jax.motion.appearance_embedding import AppearanceEmbedding

    app = AppearanceEmbedding(spec.body.config.app_dim)
    avatar["appearance"] = np.asarray(app.apply(params["motion_body"]["params"]["appearance"],
                                                jnp.asarray(ann["identity"][None])))
  if spec.refine is not None:
    rsize = spec.refine.image_size
    corners = np.array([[head_box[0], head_box[1], 0.0], [head_box[2], head_box[3], 0.0]], np.float32)
    avatar.update(
        refine_image=crop(image, head_box, rsize)[None].astype(np.float32) / 255.0,
        refine_affine=_affine_of(head_grid(rsize), "body units -> head grid"),
        refine_box=to_crop_pixels(corners, body_box, spec.output_size)[:, :2].reshape(1, 4))
  return avatar


# ----------------------------------------------------------------------------------------------- stream


@dataclasses.dataclass
class Session:
  """A prepared stream: the spec, device params, the avatar's initial state (`prepare`)."""
  spec: core.StreamSpec
  params: dict
  state: dict
  avatar: dict

  @property
  def block_samples(self) -> int:
    return core.block_samples(self.spec)


def prepare(image, *, checkpoint: str | os.PathLike | None = None, mode: str = "upper",
            amplitude: float = 1.0, pose_range: float = 1.0, reference_video: str | os.PathLike | None = None,
            refine: bool = True, seed: int = 0, num_steps: int = 10, params: dict | None = None,
            configs: dict | None = None, guidance_scale: float = GUIDANCE_SCALE,
            clip_x0: float | None | str = "auto", render_batch: int | None = None,
            render_dtype: str = "float32", seam_frames: int = 8) -> Session:
  """Loads the models, prepares the avatar and its initial state (all the checks `stream` does up front)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if checkpoint is not None:
    params, configs = load_checkpoint(checkpoint, mode, refine)
  elif params is None or configs is None:
    raise ValueError("no trained checkpoint given: pass checkpoint=DIR (training workdirs, see "
                     "infer.stream), or params= and configs= (e.g. from random_params)")
  configs = dict(configs)
  if not refine or mode != "upper":
    configs.pop("face_refine", None)
  if clip_x0 == "auto":
    clip_x0 = configs.get("clip_x0")
  spec = build_spec(configs, mode, num_steps=num_steps, guidance_scale=guidance_scale, clip_x0=clip_x0,
                    render_batch=render_batch, render_dtype=render_dtype, seam_frames=seam_frames)
  if isinstance(image, str | os.PathLike):
    name, image = str(image), read_image(image)
  else:
    name, image = "portrait", np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise MediaError(f"the portrait must be an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
  needed = ["motion_face", "render"] + (["motion_body"] if mode == "upper" else [])
  needed += ["face_refine"] if spec.refine is not None else []
  missing = [k for k in needed if k not in params]
  if missing:
    raise ValueError(f"params lacks {missing} (keys as the checkpoint workdirs: {needed})")
  params = {k: params[k] for k in needed}
  avatar = prepare_avatar(image, spec, params, amplitude=amplitude, pose_range=pose_range,
                          reference_video=reference_video, name=name)
  device_params = jax.device_put({**params, "template": load_head_template()})
  state = core.make_init_state(spec)(device_params, avatar, jax.random.key(seed))
  return Session(spec, device_params, state, avatar)


def _frames(session: Session, audio_chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
  spec = session.spec
  step = core.make_stream_step(spec)
  block = core.block_samples(spec)
  t_win = spec.window
  state, params = session.state, session.params
  session.state = None  # donated to the first step
  pending = np.zeros(0, np.float32)
  total, i = 0, 0

  def run(samples: np.ndarray, num_frames: int):
    nonlocal state
    buf = np.zeros(block, np.float32)
    buf[:samples.size] = samples
    state, frames = step(params, state, buf)
    return np.asarray(frames)[:num_frames]

  for chunk in audio_chunks:
    chunk = np.asarray(chunk, np.float32)
    if chunk.ndim != 1:
      raise ValueError(f"audio chunks must be 1-D arrays of 16 kHz mono samples, got shape {chunk.shape}")
    total += chunk.size
    pending = np.concatenate([pending, chunk])
    while True:
      a0, a1 = core.window_bounds(i, t_win, spec.spf)
      if pending.size < a1 - a0:
        break
      frames = run(pending[:a1 - a0], t_win)
      pending = pending[a1 - a0:]
      i += 1
      yield from frames
  # The last partial window: zero-padded, only the frames the audio covers.
  num_total = int(fractions.Fraction(total) / spec.spf + fractions.Fraction(1, 2))
  remaining = num_total - i * t_win
  if remaining > 0:
    yield from run(pending, remaining)


def stream(image, audio_chunks: Iterable[np.ndarray], *, checkpoint: str | os.PathLike | None = None,
           mode: str = "upper", amplitude: float = 1.0, pose_range: float = 1.0,
           reference_video: str | os.PathLike | None = None, refine: bool = True, seed: int = 0,
           num_steps: int = 10, params: dict | None = None, configs: dict | None = None,
           guidance_scale: float = GUIDANCE_SCALE, clip_x0: float | None | str = "auto",
           render_batch: int | None = None, render_dtype: str = "float32",
           seam_frames: int = 8) -> Iterator[np.ndarray]:
  """Video frames of a portrait speaking the streamed audio (module docstring).

  Args:
    image: portrait path or (H, W, 3) uint8 RGB array (mode "upper": head and shoulders).
    audio_chunks: iterable of 1-D float arrays of 16 kHz mono samples in [-1, 1], any lengths (resample
      other audio first, e.g. `infer.media.read_audio`).
    checkpoint: directory of training workdirs (module docstring); None: pass params and configs.
    mode: "upper" (upper-body renderer, body motion, hands) or "head" (head renderer).
    amplitude, pose_range: style multipliers (module docstring; 1 = typical).
    reference_video: optional video whose expressions become the style reference.
    refine: apply the face-refine pass when the models have one (mode "upper").
    seed: PRNG seed (window i samples with fold_in(key, i)).
    num_steps: DDIM steps of the motion samplers.
    params, configs: models without a checkpoint, keyed like the workdirs (`random_params`).
    guidance_scale: FaceMotionDiT classifier-free guidance (1 = off; default
      `chatanyone_jax.motion.sampling.GUIDANCE_SCALE`, measured there).
    clip_x0: DDIM x̂0 clip of the samplers, in normalised (std) units; None = off; "auto" =
      configs["clip_x0"] if set (`random_params` sets 3: untrained ε is uncalibrated), else off.
    render_batch: frames per renderer call (bounds memory at full size); None = a whole window.
    render_dtype: "float32" or "bfloat16" compute for the per-frame renderer networks (bfloat16 is the
      fast path on GPUs; parameters stay float32).
    seam_frames: each face-motion window is joined to the previous one over this many frames
      (`chatanyone_jax.motion.sampling.join_window`); 0 = raw windows.

  Returns:
    A generator of (H, W, 3) uint8 frames at 30 fps. The models and the avatar are prepared before
    this returns (errors such as a portrait without a face or a missing checkpoint raise here).
  """
  session = prepare(image, checkpoint=checkpoint, mode=mode, amplitude=amplitude, pose_range=pose_range,
                    reference_video=reference_video, refine=refine, seed=seed, num_steps=num_steps,
                    params=params, configs=configs, guidance_scale=guidance_scale, clip_x0=clip_x0,
                    render_batch=render_batch, render_dtype=render_dtype, seam_frames=seam_frames)
  return _frames(session, audio_chunks)


def num_output_frames(num_samples: int) -> int:
  """Frames `stream` yields for num_samples of 16 kHz audio: round(num_samples · 30 / 16000)."""
  return int(fractions.Fraction(num_samples) * FPS / SAMPLE_RATE + fractions.Fraction(1, 2))
