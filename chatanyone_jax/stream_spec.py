"""What a streaming step is compiled for: `StreamSpec`, and how a stream's audio maps to its windows.

The streaming step (`chatanyone_jax.stream_step`) turns one block of audio into the next `hop` video
frames: each call generates a whole motion window of T frames and emits its first `hop` (hop = T: whole
windows, the original stream). `StreamSpec` is its static description (models, sampler settings, hop,
look-ahead, rates; hashable: one compiled step per spec); `step_bounds` and `block_samples` say which
audio samples each step consumes, so that audio and video never drift apart. The host side
(checkpoints, the portrait, re-blocking audio chunks) is `infer.streaming`.
"""

from __future__ import annotations

import dataclasses
import fractions

import jax.numpy as jnp
import numpy as np

from chatanyone_jax.audio import whisper
from chatanyone_jax.audio.encoder import AudioEncoder, ExternalFeatureAdapter
from chatanyone_jax.audio.melspec import MelConfig
from chatanyone_jax.audio.melspec import num_frames as num_mel_frames
from chatanyone_jax.motion.face_motion_dit import FaceMotionDiT
from chatanyone_jax.motion.lip_regressor import LipRegressor
from chatanyone_jax.motion.sampling import DDIM_STEPS, GUIDANCE_SCALE, NOISE_SCALE, SEAM_FRAMES
from chatanyone_jax.motion.upper_body_motion import UpperBodyMotion
from chatanyone_jax.render.presets import RendererConfig, keypoint_layout

MODES = ("upper", "head")
# Renderer keypoint layout each mode needs (`presets.keypoint_layout`).
MODE_LAYOUT = {"upper": "hybrid_body", "head": "head_offset"}
RENDER_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # module compute dtype (None: float32)
FPS = 30  # video frames per second of a stream
SAMPLE_RATE = MelConfig.sample_rate  # audio samples per second of a stream (16 kHz mono, the mel front end's)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Static description of the streaming step (hashable: one compiled step per spec).

  Attributes:
    mode: "upper" (body renderer, UpperBodyMotion, hands, optional face refine) or "head" (head
      renderer on the head crop; no body model, no hands).
    face: the FaceMotionDiT (its config gives T = window, H = history).
    face_audio: the face model's speech front end (width = face.config.audio_dim): an AudioEncoder on the
      log-mel, or with `speech` an ExternalFeatureAdapter on the frozen encoder's features.
    speech: the frozen speech encoder of the face model (Whisper; None: log-mel); its variables are
      params["motion_face"]["speech"]. speech_context: samples of audio before each window it reads
      (`whisper.window_features`), carried in the state.
    renderer: the main renderer's networks (layout "hybrid_body" for upper, "head_offset" for head).
    body, body_audio: UpperBodyMotion and its AudioEncoder (upper mode).
    refine: the face-refine renderer (upper mode; None = no refine pass).
    face_diffusion_steps / body_diffusion_steps: length of the training noise schedules.
    num_steps: DDIM steps of both samplers.
    guidance_scale: classifier-free guidance of FaceMotionDiT (1 = conditional only, one model call).
    eta, clip_x0, noise_scale: DDIM stochasticity, x̂0 clipping and the face sampler's starting-noise
      scale (`ddim_sample`).
    seam_frames: frames over which each face-motion window is joined to the previous one
      (`chatanyone_jax.motion.sampling.join_window`; 0 = raw windows).
    mel: the log-mel front end ("causal" framing).
    fps: video frame rate (an exact fraction, so that window bounds do not drift).
    render_batch: frames per renderer call (`lax.map` batch); None = the whole window at once.
    hand_radius: capsule radius of the rendered hands, a fraction of the palm size (as preprocessing).
    hand_min_radius: smallest capsule radius as a fraction of the crop width (1.5 px of 512).
    refine_feather: feathered fraction of the refine crop's half-extent in `paste_back`.
    render_dtype: compute dtype of the per-frame renderer networks (W, G of the renderer and of face
      refine): "float32" or "bfloat16" (parameters stay float32; the avatar's F / M pass is float32).
    hop: H_s, video frames each step emits (1 <= hop <= T); None = T, whole windows. Each step
      generates a whole window of T frames that starts at the first frame not emitted yet (history =
      the last H emitted frames) and emits its first hop frames (`stream_step`).
    lookahead: L, video frames of audio after the emitted frames that a step waits for (0 <= L <=
      T - hop); the window's audio after that is silence (zeros). A step's audio is `step_bounds`.
    mask_unheard_audio: with hop < T, the window's frames after hop + L get the face model's null audio
      token (FaceMotionDiT `audio_valid`) instead of the tokens of the zeros: for a face model trained
      with look-ahead augmentation (config.lookahead_prob > 0, `data.lookahead`), which tells "not heard
      yet" from silence; `infer.models.build_spec` sets it from the face model's config.
    lip: the lip regressor (`chatanyone_jax.motion.lip_regressor`; params["motion_lip"]): each frame's
      mouth comes from it (`blend_mouth`), the rest of the expression from FaceMotionDiT. It reads the
      face model's speech-encoder features, so it needs `speech`. None = the DiT's mouth.
  """
  mode: str
  face: FaceMotionDiT
  face_audio: AudioEncoder | ExternalFeatureAdapter
  renderer: RendererConfig
  body: UpperBodyMotion | None = None
  body_audio: AudioEncoder | None = None
  refine: RendererConfig | None = None
  face_diffusion_steps: int = 1000
  body_diffusion_steps: int = 1000
  num_steps: int = DDIM_STEPS
  guidance_scale: float = GUIDANCE_SCALE
  eta: float = 0.0
  clip_x0: float | None = None
  noise_scale: float = NOISE_SCALE
  seam_frames: int = SEAM_FRAMES
  mel: MelConfig = MelConfig()
  fps: fractions.Fraction = fractions.Fraction(FPS)
  render_batch: int | None = None
  hand_radius: float = 0.12
  hand_min_radius: float = 1.5 / 512
  refine_feather: float = 0.1
  render_dtype: str = "float32"
  speech: whisper.WhisperEncoder | None = None
  speech_context: int = 0
  hop: int | None = None
  lookahead: int = 0
  mask_unheard_audio: bool = False
  lip: LipRegressor | None = None

  def __post_init__(self):
    if self.render_dtype not in RENDER_DTYPES:
      raise ValueError(f"render_dtype must be one of {sorted(RENDER_DTYPES)}, got {self.render_dtype!r}")
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if self.lip is not None and self.speech is None:
      raise ValueError("the lip regressor reads the face model's speech-encoder features: it needs a face "
                       "model with a Whisper front end (speech)")
    if self.guidance_scale < 0:
      raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance), got {self.guidance_scale}")
    if self.noise_scale < 0:
      raise ValueError(f"noise_scale must be >= 0 (1 = the plain sample), got {self.noise_scale}")
    if self.seam_frames < 0:
      raise ValueError(f"seam_frames must be >= 0 (0 = raw windows), got {self.seam_frames}")
    if self.hop is not None and not 1 <= self.hop <= self.window:
      raise ValueError(f"hop must be in [1, T = {self.window}] (None = T), got {self.hop}")
    if not 0 <= self.lookahead <= self.window - self.step_frames:
      raise ValueError(f"lookahead must be in [0, T - hop = {self.window - self.step_frames}], got "
                       f"{self.lookahead}")
    layout = keypoint_layout(self.renderer)
    if layout != MODE_LAYOUT[self.mode]:
      raise ValueError(f"mode {self.mode!r} needs a renderer with the {MODE_LAYOUT[self.mode]!r} keypoint "
                       f"layout (upper512x768 family for 'upper', head512 family for 'head'); this renderer "
                       f"has {layout!r}")
    if self.mode == "upper":
      if self.body is None or self.body_audio is None:
        raise ValueError("mode 'upper' needs the UpperBodyMotion model and its audio encoder")
      if self.body.config.window != self.window:
        raise ValueError(f"UpperBodyMotion window {self.body.config.window} != FaceMotionDiT window "
                         f"{self.window}")
      if self.body.config.layout.num_head_kp != self.renderer.num_kp_head:
        raise ValueError("UpperBodyMotion and the renderer disagree on the number of head keypoints")
      if self.body.config.layout.num_body_kp != self.renderer.motion_extractor.num_kp:
        raise ValueError("UpperBodyMotion and the renderer disagree on the number of body keypoints")
    if self.refine is not None:
      if self.mode != "upper":
        raise ValueError("the face-refine pass applies to mode 'upper' only")
      if keypoint_layout(self.refine) != "head_offset" or not self.refine.spade_generator.hand_injection:
        raise ValueError("the refine renderer needs the 'head_offset' layout and G's injection branch "
                         "(presets face_refine / tiny_face_refine)")
    if self.face_audio.width != self.face.config.audio_dim:
      raise ValueError("the face AudioEncoder width must equal FaceMotionDiT audio_dim")
    if (self.speech is None) != isinstance(self.face_audio, AudioEncoder):
      raise ValueError("a face model with a speech encoder (Whisper) needs its ExternalFeatureAdapter front "
                       "end, a log-mel model its AudioEncoder")
    if self.speech is not None:
      if self.speech_context % whisper.SAMPLES_PER_OUTPUT:
        raise ValueError(f"speech_context {self.speech_context} is not a multiple of "
                         f"{whisper.SAMPLES_PER_OUTPUT} samples")
    if self.mel.padding != "causal":
      raise ValueError("streaming needs the 'causal' log-mel framing")

  @property
  def window(self) -> int:
    return self.face.config.window

  @property
  def history(self) -> int:
    return self.face.config.history

  @property
  def step_frames(self) -> int:
    """Frames each step emits: hop, or T for whole windows."""
    return self.window if self.hop is None else self.hop

  def heard_frames(self) -> np.ndarray | None:
    """(1, T) bool: the frames of a window whose audio a step has heard (its first hop + L) when the face
    model masks the others (mask_unheard_audio, hop < T); else None, every frame's audio tokens used."""
    if not self.mask_unheard_audio or self.step_frames >= self.window:
      return None
    return np.arange(self.window)[None] < self.step_frames + self.lookahead

  @property
  def spf(self) -> fractions.Fraction:
    """Audio samples per video frame (16000 / 30 = 1600 / 3)."""
    return fractions.Fraction(self.mel.sample_rate) / fractions.Fraction(self.fps)

  @property
  def window_samples(self) -> int:
    """W: samples of a window's audio as training cuts them, round(T · spf)."""
    return round(self.window * self.spf)

  @property
  def num_mel(self) -> int:
    """M: mel frames per window, those of round(T · spf) samples (the training windows' count)."""
    return num_mel_frames(round(self.window * self.spf), self.mel)

  @property
  def output_size(self) -> tuple[int, int]:
    return self.renderer.output_size


def window_bounds(i: int, window: int, spf: fractions.Fraction) -> tuple[int, int]:
  """Audio samples [a_i, a_{i+1}) of window i: a_i = round(i · T · spf) (halves round up).

  Window i covers video frames [iT, (i+1)T) and these samples, so audio and video never drift apart,
  also when T · spf is not an integer (T = 40 at 30 fps and 16 kHz: 21333.3 samples per window).
  """
  f = lambda k: int((2 * k * window * spf.numerator + spf.denominator) // (2 * spf.denominator))
  return f(i), f(i + 1)


def frame_sample(f: int, spf: fractions.Fraction) -> int:
  """b(f) = round(f · spf) (halves round up): the first audio sample of video frame f."""
  return int((2 * f * spf.numerator + spf.denominator) // (2 * spf.denominator))


def step_bounds(i: int, spec: StreamSpec) -> tuple[int, int]:
  """Audio samples [c_i, c_{i+1}) that step i consumes: c_0 = 0, c_i = b(i · hop + L) for i >= 1.

  Step i emits frames [i · hop, (i + 1) · hop) and needs the audio up to the end of frame
  (i + 1) · hop + L - 1, i.e. sample c_{i+1} = round(((i + 1) · hop + L) · spf); the first step also
  waits for the look-ahead. With hop = T and L = 0 these are `window_bounds`.
  """
  f = lambda k: 0 if k == 0 else frame_sample(k * spec.step_frames + spec.lookahead, spec.spf)
  return f(i), f(i + 1)


def block_samples(spec: StreamSpec) -> int:
  """Length of the audio array each step call takes: the longest step, ceil((hop + L) · spf).

  The first c_{i+1} - c_i samples of the block are step i's audio (`step_bounds`), the rest is
  ignored; the step's state knows i and the rounding phases, so one fixed block length serves every
  step without an argument or a recompilation. Whole windows (hop = T, L = 0): ceil(T · spf).
  """
  k = spec.step_frames + spec.lookahead
  return int(-(-k * spec.spf.numerator // spec.spf.denominator))


def step_blocks(audio: np.ndarray, spec: StreamSpec, num_steps: int):
  """The audio blocks of steps 0 .. num_steps - 1 of a stream of one whole clip `audio` ((samples,) 16 kHz):
  step i's samples (`step_bounds`) at the start of a `block_samples` array, zeros after them (also past
  the clip's end: a stream that goes on in silence)."""
  size = block_samples(spec)
  for i in range(num_steps):
    c0, c1 = step_bounds(i, spec)
    block = np.zeros(size, np.float32)
    piece = np.asarray(audio[c0:c1], np.float32)
    block[:piece.size] = piece
    yield block
