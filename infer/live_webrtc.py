"""The WebRTC side of the live server: a fastrtc handler per connection (`AvatarHandler`).

fastrtc's audio-video `Stream` (`infer.serve`) gives each connection a copy of the handler: the microphone's
audio arrives at `receive` (16 kHz mono; what arrives while the session starts is kept for it), and fastrtc
pulls `emit` (20 ms of 48 kHz audio) and `video_emit` (one frame) at their real-time rates. Both read one
`infer.timeline.Timeline` from one start time, so the frames of a block and the audio they were made from
leave together. The page sends a blank video track (a fastrtc audio-video stream answers the client's video
track with its own) and posts its settings when the handler asks for them ("send_input" on the data channel);
the handler reports on the data channel.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import Any

import numpy as np
from fastrtc import AsyncAudioVideoStreamHandler
from fastrtc.utils import get_current_context

from chatanyone_jax.stream_spec import FPS, SAMPLE_RATE
from infer.live import LiveError, LiveStream
from infer.live_server import AvatarServer, Settings
from infer.timeline import OUTPUT_RATE, Timeline

log = logging.getLogger(__name__)

AUDIO_CHUNK = OUTPUT_RATE // 50  # fastrtc's 20 ms audio frames
AUDIO_LEAD_S = 0.04  # audio chunks are handed to fastrtc this far ahead of their play time
EARLY_INPUT_S = 10.0  # input kept while the session starts (the newest this many seconds)


class AvatarHandler(AsyncAudioVideoStreamHandler):
  """One WebRTC connection: microphone audio in; the avatar's frames and the same audio out (`Timeline`).

  fastrtc calls `receive` with 16 kHz mono int16 input, and pulls `emit` (20 ms of 48 kHz audio) and
  `video_emit` (one frame) at their real-time rates; both read the same `Timeline` from one start time.
  """

  def __init__(self, server: AvatarServer):
    super().__init__(expected_layout="mono", output_sample_rate=OUTPUT_RATE, input_sample_rate=SAMPLE_RATE,
                     fps=FPS)
    self.server = server
    self.live: LiveStream | None = None
    self.timeline: Timeline | None = None
    self.sid: str | None = None
    self.ready = asyncio.Event()
    self.input_event = asyncio.Event()
    self.closed = False
    self.t0: float | None = None
    self.audio_chunk = 0
    self.video_frame = 0
    self.last_input = 0.0
    self.settings_args: Any = None
    self.worker: asyncio.Task | None = None
    self.webrtc_id: str | None = None
    self.early: collections.deque[tuple[np.ndarray, float]] = collections.deque()  # (pcm, arrival)
    self.early_samples = 0

  def copy(self) -> AvatarHandler:
    return AvatarHandler(self.server)

  def _send(self, payload: dict) -> None:
    if self.channel is not None and getattr(self.channel, "readyState", "open") == "open":
      self.channel.send(json.dumps(payload))

  def _error(self, e: LiveError) -> None:
    log.info("webrtc %s: %s (%s)", self.webrtc_id, e, e.code)
    self._send({"type": "error", "data": str(e)})  # shown by fastrtc's own clients
    self._send({"type": "avatar", "event": "error", "code": e.code, "message": str(e)})

  async def _close_connection(self) -> None:
    pc = self.server.stream.pcs.get(self.webrtc_id) if self.server.stream else None
    if pc is not None:
      await pc.close()

  async def start_up(self) -> None:
    self.webrtc_id = get_current_context().webrtc_id
    await self.wait_for_args()  # asks the page for its settings ("send_input"); it posts /api/input
    self.settings_args = self.latest_args[-1]
    try:
      settings = Settings(self.server, self.settings_args)
      self.sid, self.live = await asyncio.to_thread(self.server.open, "webrtc", settings)
    except LiveError as e:
      self.closed = True  # no session: keep nothing more (the connection is closing)
      self._take_early()
      self._error(e)
      await self._close_connection()
      return
    self.settings = settings
    # The speech that came while the session started (settings, models) is the start of what was said.
    for pcm, arrived in self._take_early():
      self.live.feed(pcm, arrived=arrived)
      self.last_input = arrived
      self.input_event.set()
    self.timeline = Timeline(self.live.idle_frame())
    h, w = self.live.output_size
    self._send({"type": "avatar", "event": "ready", "session": self.sid, "mode": self.live.mode,
                "width": w, "height": h, "window": self.live.spec.window})
    self.worker = asyncio.create_task(self._work())
    self.ready.set()

  async def receive(self, frame: tuple[int, np.ndarray]) -> None:
    rate, pcm = frame
    if self.closed:
      return
    if rate != SAMPLE_RATE:
      self._error(LiveError("bad_audio", f"expected {SAMPLE_RATE} Hz audio, got {rate} Hz"))
      return
    pcm = np.asarray(pcm, np.float32).reshape(-1) / 32768.0
    if self.live is None:  # the session is starting: keep the newest EARLY_INPUT_S for it
      self._keep_early(pcm, time.monotonic())
      return
    self.live.feed(pcm)
    self.last_input = time.monotonic()
    self.input_event.set()

  def _keep_early(self, pcm: np.ndarray, arrived: float) -> None:
    """Keeps input that arrives before the session is open: the newest EARLY_INPUT_S seconds."""
    self.early.append((pcm, arrived))
    self.early_samples += pcm.size
    while len(self.early) > 1 and self.early_samples - self.early[0][0].size >= EARLY_INPUT_S * SAMPLE_RATE:
      self.early_samples -= self.early.popleft()[0].size

  def _take_early(self) -> list[tuple[np.ndarray, float]]:
    """The kept input, oldest first; the buffer is empty afterwards."""
    early, self.early, self.early_samples = list(self.early), collections.deque(), 0
    return early

  def _apply_settings(self) -> None:
    args = self.latest_args[-1] if self.latest_args else None
    if args is self.settings_args:
      return
    self.settings_args = args
    try:
      settings = Settings(self.server, args, defaults=self.settings)
      if settings.portrait != self.settings.portrait:
        raise LiveError("portrait_change", "the portrait cannot change during a stream: start a new one")
      self.live.request(mode=settings.mode, style=settings.style)
      self.settings = settings
    except LiveError as e:
      self._error(e)

  async def _work(self) -> None:
    """Steps the stream as windows complete; flushes a partial window once the input stalls."""
    try:
      while not self.closed:
        try:
          await asyncio.wait_for(self.input_event.wait(), 0.1)
        except TimeoutError:
          pass
        self.input_event.clear()
        self._apply_settings()
        stalled = time.monotonic() - self.last_input > self.server.config.stall_s
        if self.live.ready():
          block = await asyncio.to_thread(self.live.step)
        elif stalled and self.live.pending_samples:
          block = await asyncio.to_thread(self.live.flush)
        else:
          continue
        if block is None or self.closed:
          continue
        unit = self.timeline.put(block)
        self._send({"type": "avatar", "event": "block", "index": block.index, "unit": unit,
                    "first_frame": block.first_frame, "num_frames": len(block.frames),
                    "padded": block.padded, "latency_s": round(block.latency_s, 3),
                    "speech_latency_s": round(block.speech_latency_s, 3),
                    "stats": self.live.stats(), "dropped_blocks": self.timeline.dropped_blocks})
        self.input_event.set()  # another window may be complete already
    except LiveError as e:
      self._error(e)
    except Exception:  # keep serving the other sessions; this one reports and stops
      log.exception("webrtc session %s failed", self.sid)
      self._error(LiveError("internal", "the avatar stream failed (see the server log)"))
      await self._close_connection()

  def _start_clock(self) -> float:
    if self.t0 is None:
      self.t0 = time.monotonic()
    return self.t0

  async def emit(self):
    await self.ready.wait()
    if self.closed or self.timeline is None:
      await asyncio.sleep(0.02)  # fastrtc calls again at once: do not spin the event loop
      return None
    t0 = self._start_clock()
    delay = t0 + self.audio_chunk * AUDIO_CHUNK / OUTPUT_RATE - AUDIO_LEAD_S - time.monotonic()
    if delay > 0:
      await asyncio.sleep(delay)
    samples = self.timeline.audio(self.audio_chunk * AUDIO_CHUNK, AUDIO_CHUNK)
    self.audio_chunk += 1
    return OUTPUT_RATE, samples[None]

  async def video_receive(self, frame: np.ndarray) -> None:
    pass  # the page sends a blank video track only so that fastrtc answers with the avatar's

  async def video_emit(self):
    await self.ready.wait()
    if self.timeline is None:  # the session failed to start and is closing
      await asyncio.sleep(1 / FPS)
      return np.zeros((64, 64, 3), np.uint8)
    t0 = self._start_clock()
    # fastrtc stamps frame k with pts k · int(90000 / 30) = k · 2999 ticks, 0.03 % fast, and the audio with
    # its sample count: repeat a unit when the frames run ahead of the clock, so that unit n keeps the play
    # time n / 30 of its audio. Never skip units when late (a stalled event loop): the frames after a skip
    # would carry the pts of earlier units and play ahead of their audio at the receiver (the audio skips
    # nothing); late frames leave at once with their own pts instead.
    clock_unit = int((time.monotonic() - t0) * FPS)
    n = self.video_frame
    if n > clock_unit + 1:  # video_emit(n) comes one frame period early; more than that is drift
      n -= 1
    else:
      self.video_frame = n + 1
    frame = self.timeline.video(n)
    self.timeline.prune(n, self.audio_chunk * AUDIO_CHUNK // self.timeline.samples_per_frame)
    return np.ascontiguousarray(frame[..., ::-1])  # fastrtc sends bgr24

  async def shutdown(self) -> None:
    self.closed = True
    self.ready.set()
    if self.worker is not None:
      self.worker.cancel()
    if self.sid is not None:
      self.server.close(self.sid)
      self.sid = None
