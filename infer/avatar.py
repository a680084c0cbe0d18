"""The avatar of a stream: a portrait (and an optional reference video) -> the inputs of `init_state`.

The portrait is prepared as preprocessing annotates training clips (`data.preprocess`): MediaPipe
landmarks of a one-frame clip (`data.landmarks.extract_landmarks`), `annotate_clip` (head-template fit
in body units, head / body boxes, keypoints), then the crops at each renderer's input size and the
affine maps from body units to their grid units. Where a box leaves the portrait the crop carries the
portrait's border outwards, increasingly blurred (`data.crops.crop(pad="extend")`; the records' crops are
black there, and the renderer would copy a black band into every frame). `prepare_avatar` returns the
host-side arrays that `chatanyone_jax.stream_step.init_state` turns into the stream's state (F volume,
source keypoints). `load_portrait` reads, checks and annotates the portrait alone, without any model, so
that callers can report a bad portrait before they build or load models.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import threading

import jax.numpy as jnp
import numpy as np

from chatanyone_jax.motion.appearance_embedding import AppearanceEmbedding
from chatanyone_jax.motion.face_motion_dit import style_controls
from chatanyone_jax.stream_spec import FPS, SAMPLE_RATE, StreamSpec
from data.annotate import Annotator, annotate_clip, face_runs
from data.crops import body_units_to_grid, crop, to_crop_pixels, to_grid
from data.decode import VideoFailure, iter_frames
from data.landmarks import LandmarkError, extract_landmarks
from data.media import MediaError, read_image
from data.preprocess_config import PreprocessConfig
from infer.options import Style

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
  # Coordinates (body units, grid units, boxes) do not depend on the crop sizes: small crops keep the
  # annotation's by-products (JPEG crops, masks, hand images) cheap.
  return Annotator(PreprocessConfig(body_size=(96, 64), head_size=64))


@functools.lru_cache(maxsize=1)
def _cached_annotator():
  return _annotator()


def annotate_image(image: np.ndarray, name: str = "portrait") -> dict[str, np.ndarray]:
  """`data.preprocess.annotate_clip` of a one-frame clip (fit, boxes, keypoints), first row of each array.

  Raises:
    AvatarError: no face in the image.
  """

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


@dataclasses.dataclass(frozen=True)
class Portrait:
  """A portrait read, checked and annotated (`load_portrait`): the image and its `annotate_image` arrays."""
  image: np.ndarray  # (H, W, 3) uint8 RGB
  annotation: dict[str, np.ndarray]
  name: str = "portrait"


def load_portrait(image: str | os.PathLike | np.ndarray, name: str | None = None) -> Portrait:
  """Reads (given a path), checks and annotates a portrait; no model is needed.

  Raises:
    MediaError: an unreadable file, or not an (H, W, 3) uint8 RGB image. AvatarError: no face in it.
  """
  if isinstance(image, str | os.PathLike):
    name, image = name or str(image), read_image(image)
  else:
    name, image = name or "portrait", np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise MediaError(f"the portrait must be an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
  return Portrait(image, annotate_image(image, name), name)


def _reference(path: str | os.PathLike, spec: StreamSpec, norm: dict,
               max_seconds: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
  """A reference video -> ((1, T, ref_dim) normalised expression window, (2,) its style controls).

  Preprocessed as training clips are: 30 fps frames, MediaPipe landmarks, `annotate_clip` on the
  longest run of face frames; the window is T frames from its middle (repeated when shorter).
  """
  motion = reference_motion(path, max_seconds)
  t = spec.window
  start = max(0, (len(motion) - t) // 2)
  idx = np.minimum(start + np.arange(t), len(motion) - 1)
  window = (motion[idx] - norm["motion_mean"]) / norm["motion_std"]  # (T, 58)
  style = np.asarray(style_controls(jnp.asarray(window[None])))[0]
  return window[None, :, :spec.face.config.ref_dim], style


def reference_motion(path: str | os.PathLike, max_seconds: float = 10.0, *,
                     compute: bool = True) -> np.ndarray | None:
  """(N, 58) expression + pose coefficients of a reference video's longest face run, cached by the file's
  path, size and modification time: a live session whose style changes (a slider moved) with a reference
  video selected does not decode and annotate the video again (about 10 s of CPU for 10 s of video).

  Thread-safe. `compute=False` returns only a cached result: None when the video has not been annotated
  (`infer.live.LiveStream.request` then annotates it in the background instead of stalling the stream).

  Raises:
    MediaError: a missing or unreadable file, or a video without a face.
  """
  try:
    st = os.stat(path)
  except OSError as e:
    raise MediaError(f"cannot use reference video {path}: {e}") from e
  key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, float(max_seconds))
  with _REFERENCE_LOCK:
    if key in _REFERENCE_CACHE:
      _REFERENCE_CACHE.move_to_end(key)
      return _REFERENCE_CACHE[key]
  if not compute:
    return None
  motion = _annotate_reference(key[0], max_seconds)
  with _REFERENCE_LOCK:
    _REFERENCE_CACHE[key] = motion
    while len(_REFERENCE_CACHE) > REFERENCE_CACHE_SIZE:
      _REFERENCE_CACHE.popitem(last=False)  # the least recently used
  return motion


REFERENCE_CACHE_SIZE = 16  # reference videos kept annotated (`reference_motion`)
_REFERENCE_CACHE: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
_REFERENCE_LOCK = threading.Lock()


def _annotate_reference(path: str, max_seconds: float) -> np.ndarray:
  try:
    frames = np.stack(list(iter_frames(path, FPS, max_side=640, max_frames=int(max_seconds * FPS))))
    lm = extract_landmarks(frames, fps=FPS, segmentation=False, name=str(path))
  except (VideoFailure, LandmarkError, ValueError) as e:
    raise MediaError(f"cannot use reference video {path}: {e}") from e
  run = max(face_runs(lm.face_valid, 1), key=len)
  clip = annotate_clip(frames, lm, run, np.zeros(int(round(len(run) * SAMPLE_RATE / FPS)), np.float32),
                       "reference", _cached_annotator())
  motion = np.concatenate([clip["exp"], clip["pose"]], -1).astype(np.float32)  # (N, 58)
  motion.flags.writeable = False  # shared by every caller of the cache
  return motion


def prepare_avatar(image: np.ndarray | Portrait, spec: StreamSpec, params: dict, *, style: Style = Style(),
                   name: str = "portrait") -> dict[str, np.ndarray]:
  """Host-side avatar inputs of `chatanyone_jax.stream_step.init_state` (see there for the keys).

  Args:
    image: (H, W, 3) uint8 RGB portrait, or one `load_portrait` already annotated.
    spec: the stream's spec (mode, renderer input sizes, window).
    params: the stream's params (motion_face's "norm" and reference input, motion_body's appearance).
    style: amplitude / pose-range multipliers and an optional reference video (`Style`).
    name: the portrait's name in error messages.

  Raises:
    AvatarError: no face in the portrait. MediaError: an unusable reference video.
    ValueError: a reference video for a model without the reference input.
  """

  portrait = image if isinstance(image, Portrait) else load_portrait(image, name)
  image, ann = portrait.image, portrait.annotation
  body_box, head_box = ann["body_box"], ann["head_box"]
  main_box = body_box if spec.mode == "upper" else head_box
  size = spec.renderer.image_size
  head_grid = lambda s: (lambda p: to_grid(to_crop_pixels(_units_to_frame(p, body_box), head_box, s), s))
  if spec.mode == "upper":
    kp_affine = _affine_of(lambda p: body_units_to_grid(p, size), "body units -> body grid")
  else:
    kp_affine = _affine_of(head_grid(size), "body units -> head grid")
  avatar = {
      "image": crop(image, main_box, size, pad="extend")[None].astype(np.float32) / 255.0,
      "pose": ann["pose"][None], "scale": ann["scale"][None], "exp": ann["exp"][None],
      "identity": ann["identity"][None], "kp_affine": kp_affine,
  }
  base = default_style(spec.window)
  if style.reference_video is not None:
    if "ref_proj" not in params["motion_face"]["params"]["face"]:
      raise ValueError("this motion_face model was trained without the reference input "
                       "(use_reference=False): drop the reference video")
    avatar["reference"], base = _reference(style.reference_video, spec, params["motion_face"]["norm"])
  multipliers = np.array([style.amplitude, style.pose_range], np.float32)
  avatar["style"] = (base * multipliers)[None].astype(np.float32)
  avatar["lip_gain"] = np.array([style.amplitude], np.float32)  # the lip regressor's mouth amplitude
  if spec.mode == "upper":
    app = AppearanceEmbedding(spec.body.config.app_dim)
    avatar["appearance"] = np.asarray(app.apply(params["motion_body"]["params"]["appearance"],
                                                jnp.asarray(ann["identity"][None])))
  if spec.refine is not None:
    rsize = spec.refine.image_size
    corners = np.array([[head_box[0], head_box[1], 0.0], [head_box[2], head_box[3], 0.0]], np.float32)
    avatar.update(
        refine_image=crop(image, head_box, rsize, pad="extend")[None].astype(np.float32) / 255.0,
        refine_affine=_affine_of(head_grid(rsize), "body units -> head grid"),
        refine_box=to_crop_pixels(corners, body_box, spec.output_size)[:, :2].reshape(1, 4))
  return avatar
