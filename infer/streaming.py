"""`stream(image, audio_chunks)`: a portrait and arriving speech -> video frames, as a generator.

  frames = infer.stream("portrait.jpg", chunks,   # chunks: 1-D float32, 16 kHz mono; the bundled models
                        checkpoint=None,          # or a directory of trained workdirs (infer.models)
                        options=StreamOptions(mode="upper"), style=Style(amplitude=1.5))
  for frame in frames:                                                # (H, W, 3) uint8, 30 fps, in order
    ...

Audio chunks may have any lengths; they are re-blocked into the step's blocks
(`chatanyone_jax.stream_spec.step_bounds`), so a step's frames are yielded as soon as its audio has
arrived: with whole windows (the default) T frames once their T / 30 s of audio are in, with
`StreamOptions.hop` (e.g. `infer.options.LOW_LATENCY`) hop frames once their audio and the look-ahead
after it are in (latency: (hop + lookahead) / 30 s at most, plus the step). `prepare` does
everything before the first frame: the models (`infer.models`), the avatar (`infer.avatar`) and its
initial state; one jitted step per block does the rest (`chatanyone_jax.stream_step`). FPS and
SAMPLE_RATE are the rates of the frames out and the audio in (`chatanyone_jax.stream_spec`).
"""

from __future__ import annotations

import dataclasses
import fractions
import os
import pathlib
from collections.abc import Iterable, Iterator

import jax
import numpy as np

from chatanyone_jax import stream_spec, stream_step
from chatanyone_jax.stream_spec import FPS, SAMPLE_RATE, StreamSpec
from chatanyone_jax.template import load_head_template
from infer.avatar import Portrait, load_portrait, prepare_avatar
from infer.models import build_spec, default_checkpoint, load_checkpoint
from infer.options import StreamOptions, Style

__all__ = ["ASSETS", "ASSETS_PORTRAIT", "ASSETS_SPEECH", "FPS", "SAMPLE_RATE", "Session", "audio_chunks",
           "num_output_frames", "prepare", "stream"]

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
ASSETS_PORTRAIT = ASSETS / "portrait.jpg"  # bundled real portrait and speech (see assets/NOTICE.md)
ASSETS_SPEECH = ASSETS / "speech.mp3"


@dataclasses.dataclass
class Session:
  """A prepared stream: the spec, device params, the avatar's initial state (`prepare`)."""
  spec: StreamSpec
  params: dict
  state: dict
  avatar: dict

  @property
  def block_samples(self) -> int:
    return stream_spec.block_samples(self.spec)


def prepare(image: str | os.PathLike | np.ndarray | Portrait, *, checkpoint: str | os.PathLike | None = None,
            options: StreamOptions = StreamOptions(), style: Style = Style(), params: dict | None = None,
            configs: dict | None = None) -> Session:
  """Loads the models, prepares the avatar and its initial state (all the checks `stream` does up front).

  Arguments as `stream`. The returned `Session` holds the spec, the device params, the avatar's host
  inputs and its initial state (the state is donated to the first step of the stream).
  """
  if checkpoint is None and params is None and configs is None:
    checkpoint = default_checkpoint()
  if checkpoint is not None:
    params, configs = load_checkpoint(checkpoint, options.mode, options.refine)
  elif params is None or configs is None:
    raise ValueError("no trained checkpoint given and none bundled (infer/assets/checkpoint/): pass "
                     "checkpoint=DIR (training workdirs, see infer.models), or params= and configs= (e.g. "
                     "from infer.smoke.random_params)")
  spec = build_spec(configs, options)
  needed = ["motion_face", "render"] + (["motion_body"] if spec.mode == "upper" else [])
  needed += ["face_refine"] if spec.refine is not None else []
  needed += ["motion_lip"] if spec.lip is not None else []
  missing = [k for k in needed if k not in params]
  if missing:
    raise ValueError(f"params lacks {missing} (keys as the checkpoint workdirs: {needed})")
  params = {k: params[k] for k in needed}
  portrait = image if isinstance(image, Portrait) else load_portrait(image)
  avatar = prepare_avatar(portrait, spec, params, style=style)
  device_params = jax.device_put({**params, "template": load_head_template()})
  state = stream_step.make_init_state(spec)(device_params, avatar, jax.random.key(options.seed))
  return Session(spec, device_params, state, avatar)


def _frames(session: Session, audio_chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
  """The session's frames as the audio arrives: chunks re-blocked into steps (`step_bounds`), a call each."""
  spec = session.spec
  step = stream_step.make_stream_step(spec)
  block = stream_spec.block_samples(spec)
  hop = spec.step_frames
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
      c0, c1 = stream_spec.step_bounds(i, spec)
      if pending.size < c1 - c0:
        break
      frames = run(pending[:c1 - c0], hop)
      pending = pending[c1 - c0:]
      i += 1
      yield from frames
  # The last steps: their missing audio (the end of the clip, the look-ahead after it) is silence; only
  # the frames the audio covers.
  num_total = int(fractions.Fraction(total) / spec.spf + fractions.Fraction(1, 2))
  while i * hop < num_total:
    c0, c1 = stream_spec.step_bounds(i, spec)
    yield from run(pending[:c1 - c0], min(hop, num_total - i * hop))
    pending = pending[c1 - c0:]
    i += 1


def stream(image: str | os.PathLike | np.ndarray | Portrait, audio_chunks: Iterable[np.ndarray], *,
           checkpoint: str | os.PathLike | None = None, options: StreamOptions = StreamOptions(),
           style: Style = Style(), params: dict | None = None,
           configs: dict | None = None) -> Iterator[np.ndarray]:
  """Video frames of a portrait speaking the streamed audio (module docstring).

  Args:
    image: portrait path, (H, W, 3) uint8 RGB array (mode "upper": head and shoulders) or a `Portrait`
      (`infer.avatar.load_portrait`: read and annotated already).
    audio_chunks: iterable of 1-D float arrays of 16 kHz mono samples in [-1, 1], any lengths (resample
      other audio first, e.g. `data.media.read_audio`).
    checkpoint: directory of training workdirs (`infer.models.load_checkpoint`); None: params and
      configs when given, else the bundled checkpoint (`infer.models.default_checkpoint`).
    options: mode, refine pass, seed and sampler / renderer settings (`StreamOptions`).
    style: expression amplitude, head-pose range and an optional reference video (`Style`).
    params, configs: models without a checkpoint, keyed like the workdirs (`load_checkpoint`,
      `infer.smoke.random_params`).

  Returns:
    A generator of (H, W, 3) uint8 frames at 30 fps: a clip of S samples gives round(S · 30 / 16000)
    frames (the audio after the clip is silence, the frames after it are cut), and the same audio cut
    into other chunks gives the same frames (for a given hop and seed). The models and the avatar are
    prepared before this returns (errors such as a portrait without a face or a missing checkpoint
    raise here).
  """
  session = prepare(image, checkpoint=checkpoint, options=options, style=style, params=params,
                    configs=configs)
  return _frames(session, audio_chunks)


def audio_chunks(audio: np.ndarray, size: int) -> Iterator[np.ndarray]:
  """The audio in consecutive pieces of `size` samples (the last one shorter), as a live source sends it."""
  for i in range(0, audio.size, size):
    yield audio[i:i + size]


def num_output_frames(num_samples: int) -> int:
  """Frames `stream` yields for num_samples of 16 kHz audio: round(num_samples · 30 / 16000)."""
  return int(fractions.Fraction(num_samples) * FPS / SAMPLE_RATE + fractions.Fraction(1, 2))
