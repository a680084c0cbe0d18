"""What `infer.stream` is asked to do: `StreamOptions` (models and sampling) and `Style` (speaking style).

Both are frozen dataclasses whose fields are checked when they are built, so that a bad value fails
at once with a message naming the field, before any model is loaded. Variants come from
`dataclasses.replace`:

  options = StreamOptions(mode="head", num_steps=5)
  calm = Style(amplitude=0.5, pose_range=0.5)
  frames = infer.stream("portrait.jpg", chunks, checkpoint="runs/", options=options, style=calm)
  lively = dataclasses.replace(calm, amplitude=2.0)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os

from chatanyone_jax.motion.sampling import DDIM_STEPS, GUIDANCE_SCALE, NOISE_SCALE, SEAM_FRAMES
from chatanyone_jax.stream_spec import MODES, RENDER_DTYPES


def _is_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


# The low-latency setting (`StreamOptions.hop`, `.lookahead`, `.seam_frames`; the CLI's --latency low, the
# live server's default): a step every 8 frames (267 ms) with 2 frames (67 ms) of audio look-ahead, each
# step's window joined to the frames before it over 2 frames. The 8-frame join of whole windows, redone
# every 8 frames, made every emitted frame mostly the continuation of the last step's motion: on 58 held-out
# clips the bundled face model's mouth follows the speech at 0.261 with a join of 2 against 0.221 with 8
# (paired +0.040 ± 0.020; 0.279 with none, but its steps then jump: boundary change 1.8x the change inside
# steps, against 0.66x with 2 and 0.59x for whole windows); benchmarks/RESULTS.md, issue 24.
LOW_LATENCY = {"hop": 8, "lookahead": 2, "seam_frames": 2}
# Whole motion windows (the `StreamOptions` default; the CLI's --latency window).
WHOLE_WINDOWS = {"hop": None, "lookahead": 0, "seam_frames": SEAM_FRAMES}


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamOptions:
  """Which models a stream runs and how it samples motion (everything but the speaking style).

  Attributes:
    mode: "upper" (upper-body renderer, body motion, hands; needs the checkpoint's motion_body/) or
      "head" (head renderer on the head crop; no body model, no hands).
    refine: apply the face-refine pass when the models have one (mode "upper"; "head" has none).
    seed: PRNG seed; window i samples with fold_in(key(seed), i), so a seed fixes the whole stream.
    num_steps: DDIM steps of the motion samplers (>= 1).
    guidance_scale: classifier-free guidance of FaceMotionDiT (>= 0; 1 = off, one model call per step;
      default `chatanyone_jax.motion.sampling.GUIDANCE_SCALE`, where its choice is explained).
    clip_x0: clip of the samplers' x̂0 estimate in normalised (std) units (> 0); None = off; "auto" =
      configs["clip_x0"] when the models' configs set it (`infer.smoke.random_params` sets 3: untrained
      ε is uncalibrated), else `chatanyone_jax.motion.sampling.CLIP_X0` (4; why there).
    noise_scale: scale of the face-motion sampler's starting noise (>= 0; default
      `chatanyone_jax.motion.sampling.NOISE_SCALE`, where its choice is explained): below 1 the motion
      keeps closer to what the speech most likely says, with less variety.
    render_batch: frames per renderer call (>= 1; bounds memory at full size); None = a whole window.
    render_dtype: "float32" or "bfloat16" compute for the per-frame renderer networks (bfloat16 is the
      fast path on GPUs; parameters stay float32).
    seam_frames: frames over which each face-motion window is joined to the previous one (>= 0;
      `chatanyone_jax.motion.sampling.join_window`); 0 = raw windows.
    hop: video frames per step (1 .. T); None = T: whole motion windows, the default. With a hop, every
      step generates a whole window of T frames and emits its first `hop` (`chatanyone_jax.stream_step`),
      so a frame waits for hop + lookahead frames of audio instead of T: LOW_LATENCY (hop 8, look-ahead
      2 = 333 ms of audio, 300 ms algorithmic latency at most) against 1.33 s for T = 40.
    lookahead: frames of audio after a step's frames that the step waits for (0 .. T - hop); the
      window's audio after it is silence.
    lip: take each frame's mouth from the checkpoint's lip regressor (motion_lip/) when it has one
      (`chatanyone_jax.motion.lip_regressor`); False = FaceMotionDiT's own mouth.
  """
  mode: str = "upper"
  refine: bool = True
  seed: int = 0
  num_steps: int = DDIM_STEPS
  guidance_scale: float = GUIDANCE_SCALE
  clip_x0: float | str | None = "auto"
  noise_scale: float = NOISE_SCALE
  render_batch: int | None = None
  render_dtype: str = "float32"
  seam_frames: int = SEAM_FRAMES
  hop: int | None = None
  lookahead: int = 0
  lip: bool = True

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if not isinstance(self.refine, bool):
      raise ValueError(f"refine must be True or False, got {self.refine!r}")
    if not isinstance(self.lip, bool):
      raise ValueError(f"lip must be True or False, got {self.lip!r}")
    if not _is_int(self.seed):
      raise ValueError(f"seed must be an integer, got {self.seed!r}")
    if not _is_int(self.num_steps) or self.num_steps < 1:
      raise ValueError(f"num_steps must be an integer >= 1, got {self.num_steps!r}")
    if not _is_real(self.guidance_scale) or self.guidance_scale < 0:
      raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance), got {self.guidance_scale!r}")
    if not (self.clip_x0 is None or self.clip_x0 == "auto" or (_is_real(self.clip_x0) and self.clip_x0 > 0)):
      raise ValueError(f"clip_x0 must be a number > 0 (std units), None (off) or 'auto', got "
                       f"{self.clip_x0!r}")
    if not _is_real(self.noise_scale) or self.noise_scale < 0:
      raise ValueError(f"noise_scale must be a number >= 0 (1 = the plain sample), got {self.noise_scale!r}")
    if self.render_batch is not None and (not _is_int(self.render_batch) or self.render_batch < 1):
      raise ValueError(f"render_batch must be an integer >= 1 or None (a whole window), got "
                       f"{self.render_batch!r}")
    if self.render_dtype not in RENDER_DTYPES:
      raise ValueError(f"render_dtype must be one of {sorted(RENDER_DTYPES)}, got {self.render_dtype!r}")
    if not _is_int(self.seam_frames) or self.seam_frames < 0:
      raise ValueError(f"seam_frames must be >= 0 (0 = raw windows), got {self.seam_frames!r}")
    if self.hop is not None and (not _is_int(self.hop) or self.hop < 1):
      raise ValueError(f"hop must be an integer >= 1 or None (whole windows), got {self.hop!r}")
    if not _is_int(self.lookahead) or self.lookahead < 0:
      raise ValueError(f"lookahead must be an integer >= 0 (frames), got {self.lookahead!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Style:
  """How the portrait speaks: multipliers of FaceMotionDiT's style controls and a reference video.

  `amplitude` and `pose_range` scale FaceMotionDiT's style controls (`style_controls`: expression
  amplitude and head-pose range of a window of normalised motion). The base they scale is the style of
  the reference window when `reference_video` is given, else `infer.avatar.default_style`: the median
  style of windows of the same length over real talking clips. 1.0 is a typical speaker; 0 asks for a
  still face.

  Attributes:
    amplitude: expression amplitude multiplier (>= 0).
    pose_range: head-pose range multiplier (>= 0).
    reference_video: optional video whose expressions become the style reference (a motion_face model
      trained with the reference input; preprocessed as training clips are, `infer.avatar`).
  """
  amplitude: float = 1.0
  pose_range: float = 1.0
  reference_video: str | os.PathLike | None = None

  def __post_init__(self):
    for name in ("amplitude", "pose_range"):
      value = getattr(self, name)
      if not _is_real(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 (1 = typical, 0 = still), got {value!r}")
    if self.reference_video is not None and not isinstance(self.reference_video, str | os.PathLike):
      raise ValueError(f"reference_video must be a path or None, got {self.reference_video!r}")
