"""Live sessions: PCM in, blocks of frames with timestamps out; the state machine behind `infer.serve`.

A `LiveStream` is one connection's stream. It runs the same jitted step as `infer.stream`
(`chatanyone_jax.stream_step`, prepared by `infer.streaming.prepare`), but driven by pushes rather than an
iterable, so that a server can feed audio as it arrives, change the style or the mode between blocks and
bound its backlog:

  models = LiveModels.load()                      # the models of every mode, loaded once per server
  portrait = PortraitCache().get(image_bytes)     # annotated once per content hash (MediaPipe)
  live = LiveStream(models, portrait, mode="head")
  live.feed(pcm)                                  # 16 kHz mono float32, chunks of any length
  while (block := live.step()) is not None:       # one block per call
    block.frames, block.first_frame, block.audio  # (K, H, W, 3) uint8; frame n is at n / 30 s of the input
  block = live.flush()                            # the last partial window, padded with silence

Timestamps are in the input's time: frame n of a stream is at n / FPS s, and a block carries the input samples
it was made from (`audio`, starting at `sample_start`), so a transport that sends both keeps them aligned.
Nothing here assumes a block length: the stream step makes `spec.step_frames` frames per call (a motion window
of T frames by default, `hop` frames with `StreamOptions.hop`; the input samples of each call are
`stream_spec.step_bounds`). The backlog is bounded: when audio arrives faster than the step runs,
whole blocks of it are dropped (overflow "drop", for live microphones: the timeline then has a gap of their
frames) or `backlog_full` tells the caller to stop reading (overflow "wait", for producers that can wait, such
as a TTS feeding a WebSocket).

`infer.timeline.Timeline` lays blocks out on the two real-time tracks of a WebRTC call.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from chatanyone_jax import stream_spec, stream_step
from chatanyone_jax.stream_spec import FPS, MODES, SAMPLE_RATE
from data.media import MediaError
from infer.avatar import Portrait, load_portrait, prepare_avatar, reference_motion
from infer.models import checkpoint_modes, default_checkpoint, load_checkpoint
from infer.options import StreamOptions, Style
from infer.streaming import Session, prepare

OVERFLOW = ("drop", "wait")


class LiveError(ValueError):
  """A request a live session cannot serve; `code` names the case for clients (e.g. "no_face")."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


# ------------------------------------------------------------------------------------------- portraits


def decode_image(data: bytes, name: str = "portrait") -> np.ndarray:
  """PNG / JPEG / ... bytes -> (H, W, 3) uint8 RGB; a `LiveError` ("bad_image") if they are no image."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise LiveError("bad_image", f"{name} is not a readable image ({e}); send a PNG or JPEG portrait") from e


def content_id(data: bytes) -> str:
  """The cache key of uploaded content: the first 16 hex digits of its SHA-256."""
  return hashlib.sha256(data).hexdigest()[:16]


class PortraitCache:
  """Portraits annotated once (`infer.avatar.load_portrait`: MediaPipe, template fit), keyed by content hash.

  Thread-safe; keeps the `capacity` most recently used portraits and remembers the ones without a face (so a
  client retrying the same photo gets the same error at once). `add` returns the id that `get` takes.
  """

  def __init__(self, capacity: int = 32):
    self.capacity = capacity
    self._items: collections.OrderedDict[str, Portrait | LiveError] = collections.OrderedDict()
    self._lock = threading.Lock()
    self.annotations = 0  # how many portraits were annotated (cache misses)

  def add(self, data: bytes, name: str = "portrait") -> str:
    """Annotates the image bytes unless cached; returns its id. Raises `LiveError` (bad_image, no_face)."""
    key = content_id(data)
    with self._lock:
      cached = self._items.get(key)
      if cached is not None:
        self._items.move_to_end(key)
    if cached is None:
      try:
        cached = load_portrait(decode_image(data, name), name=name)
        self.annotations += 1
      except LiveError as e:
        cached = e
      except MediaError as e:  # infer.avatar.AvatarError: no face
        cached = LiveError("no_face", str(e))
      with self._lock:
        self._items[key] = cached
        while len(self._items) > self.capacity:
          self._items.popitem(last=False)
    if isinstance(cached, LiveError):
      raise cached
    return key

  def add_file(self, path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
      return self.add(f.read(), name=os.path.basename(path))

  def get(self, key: str) -> Portrait:
    """The portrait `add` returned `key` for; `LiveError` ("unknown_portrait") if it is not cached."""
    with self._lock:
      item = self._items.get(key)
    if not isinstance(item, Portrait):
      raise LiveError("unknown_portrait", f"no portrait with id {key!r}: upload it first "
                      "(POST /api/portraits)")
    return item

  def __len__(self) -> int:
    return len(self._items)


# ---------------------------------------------------------------------------------------------- models


class LiveModels:
  """The models of each mode a server streams: (params, configs) loaded once, shared by every session.

  `options` (`StreamOptions`; its mode is ignored) apply to every mode, or give a dict of them per mode.
  """

  def __init__(self, models: dict[str, tuple[dict, dict]],
               options: StreamOptions | dict[str, StreamOptions] = StreamOptions()):
    if not models:
      raise ValueError("no models: give (params, configs) of at least one mode")
    self.models = models
    self.options = options if isinstance(options, dict) else {m: options for m in models}

  @classmethod
  def load(cls, checkpoint: str | os.PathLike | None = None,
           options: StreamOptions = StreamOptions()) -> LiveModels:
    """Every mode the checkpoint serves (`infer.models.checkpoint_modes`); None: the bundled checkpoint."""
    checkpoint = checkpoint or default_checkpoint()
    if checkpoint is None:
      raise FileNotFoundError("no checkpoint given and none bundled (infer/assets/checkpoint/)")
    modes = checkpoint_modes(checkpoint)
    if not modes:
      raise ValueError(f"{checkpoint} serves no mode (it needs motion_face/ and render/, see infer.models)")
    return cls({m: load_checkpoint(checkpoint, m, options.refine) for m in modes}, options)

  @classmethod
  def random(cls, modes: tuple[str, ...] = MODES,
             options: StreamOptions | dict[str, StreamOptions] = StreamOptions()) -> LiveModels:
    """Random tiny networks (`infer.smoke.random_params`): tests and smoke runs; the frames are noise."""
    from infer.smoke import random_params

    per_mode = options if isinstance(options, dict) else {m: options for m in modes}
    return cls({m: random_params(m, refine=per_mode[m].refine) for m in modes}, per_mode)

  @property
  def modes(self) -> tuple[str, ...]:
    return tuple(m for m in MODES if m in self.models)

  def prepare(self, portrait: Portrait, mode: str, style: Style = Style()) -> Session:
    """`infer.streaming.prepare` of the portrait in `mode`: spec, device params, initial state."""
    if mode not in self.models:
      raise LiveError("bad_mode", f"mode {mode!r} is not served here (modes: {', '.join(self.modes)})")
    params, configs = self.models[mode]
    options = dataclasses.replace(self.options[mode], mode=mode)
    return prepare(portrait, options=options, style=style, params=params, configs=configs)


# ---------------------------------------------------------------------------------------------- stream


@dataclasses.dataclass(frozen=True)
class Block:
  """Frames of one step and the input audio they were made from.

  Attributes:
    index: the block's number in its stream (0, 1, ...).
    first_frame: stream frame index of frames[0]; frame n is at n / FPS s of the input audio.
    frames: (K, H, W, 3) uint8.
    audio: (L,) float32 16 kHz: the input samples of the block (with `padded` samples of silence at the end).
    sample_start: input sample index of audio[0].
    padded: samples of silence `flush` appended.
    mode: the mode that rendered it.
    compute_s: wall time of the step.
    latency_s: from the arrival of the block's last input sample to its frames being ready (compute, and
      any wait for an earlier step).
    algorithmic_s: audio the step waited for after its first frame's own audio (the rest of the block and
      the look-ahead: (hop + lookahead - 1) / FPS; `benchmarks/latency_bench.py`).
  """
  index: int
  first_frame: int
  frames: np.ndarray
  audio: np.ndarray
  sample_start: int
  padded: int
  mode: str
  compute_s: float
  latency_s: float
  algorithmic_s: float = 0.0

  @property
  def speech_latency_s(self) -> float:
    """Speech-to-frame latency of the block's first frame (its largest): algorithmic_s + latency_s."""
    return self.algorithmic_s + self.latency_s

  @property
  def timestamps(self) -> np.ndarray:
    """(K,) seconds of each frame in the input's time."""
    return (self.first_frame + np.arange(len(self.frames))) / FPS


# Reference videos of style requests are annotated here, one at a time for all sessions (CPU-bound, like
# the steps), instead of in a step (`LiveStream.request`).
_REFERENCE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference")


class LiveStream:
  """One connection's stream: `feed` PCM, `step` blocks (module docstring). Thread-safe: one thread may feed
  while another steps; steps themselves must not run concurrently.

  Args:
    models: the server's `LiveModels`.
    portrait: an annotated portrait (`PortraitCache.get`).
    mode: "upper" or "head" (one of models.modes).
    style: amplitude, pose range, reference video.
    overflow: "drop" (keep at most `max_backlog` complete windows waiting, dropping the oldest) or "wait"
      (never drop; `backlog_full` says when the caller should stop reading input).
    max_backlog: complete windows that may wait for a step (>= 1).
    clock: time source (seconds).
  """

  def __init__(self, models: LiveModels, portrait: Portrait, *, mode: str = "upper", style: Style = Style(),
               overflow: str = "drop", max_backlog: int = 1, clock: Callable[[], float] = time.monotonic):
    if overflow not in OVERFLOW:
      raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    if max_backlog < 1:
      raise ValueError(f"max_backlog must be >= 1, got {max_backlog}")
    self.models, self.portrait = models, portrait
    self.overflow, self.max_backlog, self.clock = overflow, max_backlog, clock
    self._lock = threading.Lock()
    self._pending = np.zeros(0, np.float32)
    self._arrivals: collections.deque[tuple[int, float]] = collections.deque()  # (samples fed so far, time)
    self._fed = 0  # input samples fed
    self._consumed = 0  # input samples stepped or dropped
    self._next_frame = 0
    self._blocks = 0
    self._requests: dict[str, object] = {}
    self._reference_job: concurrent.futures.Future | None = None  # annotating the requested style's video
    self.mode, self.style = mode, style
    self._open(models.prepare(portrait, mode, style))
    self.dropped_windows = self.dropped_frames = self.frames_out = 0
    self.compute_s = 0.0
    self.first_input_time: float | None = None
    self.first_frame_latency_s: float | None = None
    self.speech_latency_s: float | None = None  # of the last block (`Block.speech_latency_s`)

  def _open(self, session: Session) -> None:
    self._session = session
    self._step_fn = stream_step.make_stream_step(session.spec)
    self._window = 0  # step index within this session's state (`stream_spec.step_bounds`)

  @property
  def spec(self) -> stream_spec.StreamSpec:
    return self._session.spec

  @property
  def output_size(self) -> tuple[int, int]:
    return self._session.spec.output_size

  def idle_frame(self) -> np.ndarray:
    """(H, W, 3) uint8: the avatar's source crop at the output size, shown before the first block."""
    image = np.asarray(self._session.avatar["image"][0] * 255.0 + 0.5, np.uint8)
    h, w = self.output_size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

  def window_samples(self) -> int:
    """Input samples the next step consumes (`stream_spec.step_bounds`; a whole window by default)."""
    a0, a1 = stream_spec.step_bounds(self._window, self.spec)
    return a1 - a0

  # ------------------------------------------------------------------------------------------ input

  def feed(self, pcm: np.ndarray, arrived: float | None = None) -> int:
    """Appends 16 kHz mono samples in [-1, 1] (1-D, any length); returns the samples dropped ("drop").

    `arrived`: when the samples arrived (this stream's clock; default now), for input kept while the
    session started: the latencies count from it.

    Raises:
      LiveError ("bad_audio"): not a 1-D array of finite numbers.
    """
    pcm = np.asarray(pcm)
    if pcm.ndim != 1 or not np.issubdtype(pcm.dtype, np.number):
      raise LiveError("bad_audio", f"audio must be 1-D 16 kHz mono samples, got {pcm.dtype} {pcm.shape}")
    pcm = pcm.astype(np.float32)
    if not np.all(np.isfinite(pcm)):
      raise LiveError("bad_audio", "audio samples must be finite")
    now = self.clock() if arrived is None else arrived
    dropped = 0
    with self._lock:
      if self.first_input_time is None and pcm.size:
        self.first_input_time = now
      self._pending = np.concatenate([self._pending, pcm])
      self._fed += pcm.size
      self._arrivals.append((self._fed, now))
      if self.overflow == "drop":
        n = self.window_samples()
        while self._pending.size >= (self.max_backlog + 1) * n:  # a window too many: drop the oldest
          self._pending = self._pending[n:]
          self._consumed += n
          self._next_frame += self.spec.step_frames
          self.dropped_windows += 1
          self.dropped_frames += self.spec.step_frames
          dropped += n
    return dropped

  @property
  def pending_samples(self) -> int:
    return self._pending.size

  @property
  def backlog(self) -> int:
    """Complete windows waiting for a step."""
    with self._lock:
      return self._pending.size // self.window_samples()

  @property
  def backlog_full(self) -> bool:
    """True when `max_backlog` complete windows wait: a caller with overflow "wait" stops reading input."""
    return self.backlog >= self.max_backlog

  def ready(self) -> bool:
    """A complete window is waiting: `step` will make a block."""
    return self.backlog >= 1

  def request(self, *, mode: str | None = None, style: Style | None = None) -> None:
    """Changes the mode and / or style from the next block on (the stream keeps running).

    A style with a reference video not annotated yet (`infer.avatar.reference_motion`: about 1 s of CPU per
    second of video) takes effect from the first block after its annotation, which runs in a background
    thread: the stream goes on with the current style meanwhile instead of stalling. A later style request
    replaces a waiting one.

    Raises:
      LiveError: "bad_mode" (a mode not served), "bad_style" (a reference video that is missing).
    """
    if mode is not None and mode not in self.models.models:
      raise LiveError("bad_mode", f"mode {mode!r} is not served here (modes: {', '.join(self.models.modes)})")
    job = None
    if style is not None and style.reference_video is not None:
      try:
        if reference_motion(style.reference_video, compute=False) is None:
          job = _REFERENCE_POOL.submit(reference_motion, style.reference_video)
      except MediaError as e:
        raise LiveError("bad_style", str(e)) from e
    with self._lock:
      if mode is not None:
        self._requests["mode"] = mode
      if style is not None:
        self._requests["style"] = style
        self._reference_job = job

  @property
  def reference_pending(self) -> bool:
    """A requested style waits for its reference video's annotation."""
    job = self._reference_job
    return job is not None and not job.done()

  # ------------------------------------------------------------------------------------------- steps

  def _apply_requests(self) -> None:
    with self._lock:
      requests, self._requests = self._requests, {}
      job = self._reference_job
      if "style" in requests and job is not None:
        if not job.done():  # still annotating: this block keeps the current style
          self._requests["style"] = requests.pop("style")
        else:
          self._reference_job = None
    if "style" in requests and job is not None and job.done() and job.exception() is not None:
      with self._lock:  # the style is dropped; a mode requested with it still applies
        if "mode" in requests:
          self._requests.setdefault("mode", requests["mode"])
      raise LiveError("bad_style", str(job.exception()))
    mode = requests.get("mode", self.mode)
    style = requests.get("style", self.style)
    if mode != self.mode:
      # A new state (the other mode's renderer) from this window on; frame and sample counts go on.
      session = self.models.prepare(self.portrait, mode, style)
      with self._lock:
        self._open(session)
        self.mode, self.style = mode, style
    elif style != self.style:
      try:
        avatar = prepare_avatar(self.portrait, self.spec, self._session.params, style=style)
      except (MediaError, ValueError) as e:
        raise LiveError("bad_style", str(e)) from e
      state = dict(self._session.state)
      state["style"] = jnp.asarray(avatar["style"], jnp.float32).reshape(1, -1)
      if "lip_gain" in state:
        state["lip_gain"] = jnp.asarray(avatar["lip_gain"], jnp.float32).reshape(1)
      if "reference" in state:
        if avatar.get("reference") is not None:
          state["reference"] = jnp.asarray(avatar["reference"], jnp.float32)
          state["reference_valid"] = jnp.ones((1,), bool)
        else:
          state["reference"] = jnp.zeros_like(state["reference"])
          state["reference_valid"] = jnp.zeros((1,), bool)
      self._session.state = state
      self.style = style

  def step(self) -> Block | None:
    """Runs the stream step on the oldest complete window; None when none is waiting."""
    return self._run(pad=False)

  def flush(self) -> Block | None:
    """The pending samples of an incomplete window, padded with silence to a whole window (the avatar goes on
    breathing through the padding, and the state stays continuous for more input); None if none pend."""
    if self.ready():
      return self.step()
    return self._run(pad=True)

  def _run(self, pad: bool) -> Block | None:
    self._apply_requests()
    with self._lock:
      n = self.window_samples()
      if self._pending.size < n and not (pad and self._pending.size):
        return None
      audio = self._pending[:n]
      self._pending = self._pending[audio.size:]
      padded = n - audio.size
      sample_start, first_frame, index = self._consumed, self._next_frame, self._blocks
      self._consumed += audio.size
      last = self._consumed  # the block's last input sample is last - 1
      while self._arrivals and self._arrivals[0][0] < last:
        self._arrivals.popleft()
      arrival = self._arrivals[0][1] if self._arrivals else self.clock()
      self._next_frame += self.spec.step_frames
      self._blocks += 1
      self._window += 1
    buf = np.zeros(stream_spec.block_samples(self.spec), np.float32)
    buf[:audio.size] = audio
    t0 = self.clock()
    session = self._session
    session.state, frames = self._step_fn(session.params, session.state, buf)
    frames = np.asarray(frames)
    t1 = self.clock()
    self.frames_out += len(frames)
    self.compute_s += t1 - t0
    if self.first_frame_latency_s is None and self.first_input_time is not None:
      self.first_frame_latency_s = t1 - self.first_input_time
    audio = np.concatenate([audio, np.zeros(padded, np.float32)])
    spec = session.spec
    algorithmic = (spec.step_frames + spec.lookahead - 1) / FPS
    block = Block(index, first_frame, frames, audio, sample_start, padded, self.mode, t1 - t0, t1 - arrival,
                  algorithmic)
    self.speech_latency_s = block.speech_latency_s
    return block

  def stats(self) -> dict:
    """Frames made and dropped, fps of the step (frames per second of compute), first-frame latency."""
    return {"mode": self.mode, "blocks": self._blocks, "frames": self.frames_out,
            "dropped_frames": self.dropped_frames, "dropped_windows": self.dropped_windows,
            "fps": self.frames_out / self.compute_s if self.compute_s else None,
            "first_frame_latency_s": self.first_frame_latency_s, "speech_latency_s": self.speech_latency_s,
            "input_seconds": self._fed / SAMPLE_RATE,
            "window": self.spec.window, "hop": self.spec.step_frames, "lookahead": self.spec.lookahead,
            "reference_pending": self.reference_pending}
