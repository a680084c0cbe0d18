"""The media timeline of a real-time call: blocks of frames and their audio -> two tracks that never drift.

`Timeline` lays `infer.live.Block`s out on the two real-time tracks of a WebRTC call (30 fps video, 48 kHz
audio); where no block is ready it plays the idle frame and silence, in both tracks at once. `Upsampler` takes
the blocks' 16 kHz input audio to 48 kHz without clicks at their seams. Used by `infer.live_webrtc`.
"""

from __future__ import annotations

import collections

import numpy as np
from scipy import signal

from chatanyone_jax.stream_spec import FPS, SAMPLE_RATE
from infer.live import Block

OUTPUT_RATE = 48000  # audio of the WebRTC tracks: 1600 samples per video frame (Opus runs at 48 kHz)


class Upsampler:
  """16 kHz -> 48 kHz (x3) by a windowed-sinc FIR, with the filter state carried across calls so that blocks
  join without clicks. Delay: (taps - 1) / 2 output samples (0.75 ms)."""

  FACTOR = OUTPUT_RATE // SAMPLE_RATE

  def __init__(self, taps: int = 73):
    self.taps = signal.firwin(taps, 7600, fs=OUTPUT_RATE) * self.FACTOR
    self.reset()

  def reset(self) -> None:
    self._zi = np.zeros(self.taps.size - 1)

  def __call__(self, x: np.ndarray) -> np.ndarray:
    up = np.zeros(x.size * self.FACTOR)
    up[::self.FACTOR] = x
    y, self._zi = signal.lfilter(self.taps, 1.0, up, zi=self._zi)
    return y.astype(np.float32)


class Timeline:
  """The media of a real-time call: unit n = video frame n + 48 kHz audio samples [n·S, (n+1)·S), S = 1600.

  The video track reads `video(n)`, the audio track `audio(start, count)`, each at its own pace; a unit is
  fixed once either has read it, and units no block filled are idle: the last frame shown (the portrait's crop
  before the first block) and silence, in both tracks. `put` lays a block's frames and its input audio
  (upsampled to 48 kHz) on the next units neither track has read yet, right after the previous block when
  they are contiguous, so that a block's frames and its audio always share the same units.

  Bounded: at most `max_ahead` units wait ahead of the reads; a block that would end beyond them is dropped.
  Not thread-safe (one event loop owns it). The audio of a block lags its frames by 38 samples at 48 kHz
  (0.8 ms: the upsampling filter's delay and `PRIME`).
  """
  PRIME = 2  # samples of silence before the upsampled input of a run of contiguous blocks

  def __init__(self, idle_frame: np.ndarray, *, lead: int = 2, max_ahead: int = 120):
    self.samples_per_frame = OUTPUT_RATE // FPS
    self.idle = idle_frame
    self.lead, self.max_ahead = lead, max_ahead
    self._segments: collections.deque[tuple[int, np.ndarray, np.ndarray]] = collections.deque()
    self._read = 0  # first unit no track has read
    self._write = 0  # first unit after the last block laid out
    self._next_sample: int | None = None  # input sample that would continue the last block
    self._upsample = Upsampler()
    self._carry = np.zeros(0, np.float32)
    self.placed: list[tuple[int, int]] = []  # (unit of the first frame, block index) of every block laid out
    self.dropped_blocks = 0

  @property
  def read_position(self) -> int:
    return self._read

  @property
  def ahead(self) -> int:
    """Units laid out beyond what the tracks read."""
    return max(0, self._write - self._read)

  def put(self, block: Block) -> int | None:
    """Lays out the block; returns the unit of its first frame, None when it is dropped (too far ahead)."""
    k = len(block.frames)
    pos = max(self._write, self._read + self.lead)
    if pos + k - self._read > self.max_ahead:
      self.dropped_blocks += 1
      return None
    contiguous = self._next_sample == block.sample_start and pos == self._write
    if not contiguous:
      self._upsample.reset()
      self._carry = np.zeros(self.PRIME, np.float32)
    # A block of L input samples upsamples to 3·L, which differs from its k·S units by up to 1.5 samples
    # (window bounds are rounded): the upsampled input runs PRIME samples behind, so that each block takes
    # exactly k·S samples of it and the rest carries over to the next contiguous block.
    self._carry = np.concatenate([self._carry, self._upsample(block.audio)])
    n = k * self.samples_per_frame
    audio = np.concatenate([self._carry[:n], np.zeros(max(0, n - self._carry.size), np.float32)])
    self._carry = self._carry[n:]
    self._segments.append((pos, block.frames, audio))
    self._write = pos + k
    self._next_sample = block.sample_start + block.audio.size
    self.placed.append((pos, block.index))
    return pos

  def _segment(self, unit: int):
    for seg in self._segments:
      if seg[0] <= unit < seg[0] + len(seg[1]):
        return seg
    return None

  def _mark_read(self, unit: int) -> None:
    self._read = max(self._read, unit + 1)

  def prune(self, video_unit: int, audio_unit: int) -> None:
    """Forgets the blocks both tracks have passed."""
    low = min(video_unit, audio_unit)
    while self._segments and self._segments[0][0] + len(self._segments[0][1]) <= low:
      self._segments.popleft()

  def video(self, unit: int) -> np.ndarray:
    """(H, W, 3) uint8 frame of the unit (the idle frame where no block is)."""
    self._mark_read(unit)
    seg = self._segment(unit)
    if seg is None:
      return self.idle
    frame = seg[1][unit - seg[0]]
    self.idle = frame  # between blocks the last frame stays on screen
    return frame

  def audio(self, start: int, count: int) -> np.ndarray:
    """(count,) float32 48 kHz samples [start, start + count) of the call (silence where no block is)."""
    out = np.zeros(count, np.float32)
    s = self.samples_per_frame
    first, last = start // s, (start + count - 1) // s
    for unit in range(first, last + 1):
      self._mark_read(unit)
      seg = self._segment(unit)
      if seg is None:
        continue
      lo, hi = max(start, unit * s), min(start + count, (unit + 1) * s)
      out[lo - start:hi - start] = seg[2][lo - seg[0] * s:hi - seg[0] * s]
    return out
