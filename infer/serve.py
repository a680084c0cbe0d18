"""The live avatar server: a FastAPI app with a fastrtc WebRTC stream, a PCM WebSocket and a page.

  python -m infer.serve [--checkpoint DIR] [--host 127.0.0.1] [--port 8000] [--max-sessions 2]

  /                 the page: pick or upload a portrait, talk (or play a file), see and hear the avatar live
  /webrtc/offer     fastrtc's `Stream` (audio in, audio + video out), mounted on the app
  /ws/live          PCM in, JPEG frames with timestamps out, for integrators (`infer.live_client`)
  /api/portraits    POST image bytes -> {"id"} (annotated once, cached by content hash); GET the list
  /api/references   POST video bytes -> {"id"}: a reference video for the speaking style; GET the list
  /api/input        POST a WebRTC connection's settings (portrait, mode, amplitude, pose range, reference)
  /api/config       modes, ICE servers, limits;  /api/stats  sessions, fps, first-frame latency, memory

Every connection gets its own `infer.live.LiveStream` (the state machine of both transports); at most
`max_sessions` run at once and further ones are told "busy". WebRTC sessions lay their blocks out on a
`infer.live.Timeline`: the video and the audio sent back are the frames of a block and the input audio they
were made from, at the same media positions, with the idle frame and silence where no block is ready.

WebSocket protocol (/ws/live; `infer.live_client` implements it):
  client -> {"type": "start", "portrait": ID | "image": BASE64, "mode": "head", "amplitude": 1.0,
             "pose_range": 1.0, "reference": ID | null, "format": "s16le" | "f32le", "sample_rate": 16000,
             "overflow": "wait" | "drop", "audio": true, "quality": 80}
  server -> {"type": "ready", "session", "fps", "sample_rate", "window", "width", "height", "mode"}
  client -> binary PCM chunks (16 kHz mono, any size), {"type": "style", ...}, {"type": "flush"},
            {"type": "end"}
  server -> {"type": "block", "index", "first_frame", "num_frames", "timestamps", "sample_start",
             "num_samples", "padded", "mode", "latency_s", "compute_s"}, then num_frames binary JPEG frames,
             then (with "audio": true) the block's input audio as one binary s16le message
  server -> {"type": "error", "code", "message"} (the connection stays open, except after a failed start),
            {"type": "stats", ...} and {"type": "end"} after "end", then it closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import dataclasses
import io
import json
import logging
import os
import pathlib
import resource
import secrets
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # fastrtc imports gradio: no network at run time
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastrtc import AsyncAudioVideoStreamHandler, Stream
from fastrtc.stream import Body
from fastrtc.utils import get_current_context
from starlette.websockets import WebSocketDisconnect

from chatanyone_jax.stream_spec import FPS, MODES, SAMPLE_RATE
from infer.live import OUTPUT_RATE, LiveError, LiveModels, LiveStream, PortraitCache, Timeline, content_id
from infer.options import Style
from infer.streaming import ASSETS, ASSETS_PORTRAIT

log = logging.getLogger(__name__)

PAGE = ASSETS / "live.html"
BUNDLED_REFERENCE = ASSETS / "talking.mp4"
AUDIO_CHUNK = OUTPUT_RATE // 50  # fastrtc's 20 ms audio frames
AUDIO_LEAD_S = 0.04  # audio chunks are handed to fastrtc this far ahead of their play time
WS_CLOSE_BUSY, WS_CLOSE_POLICY = 1013, 1008  # RFC 6455: try again later, policy violation


@dataclasses.dataclass
class ServeConfig:
  """What the server runs and its limits.

  Attributes:
    checkpoint: directory of trained workdirs (None: the bundled checkpoint).
    random_weights: random tiny networks instead (smoke tests; the frames are noise).
    modes: modes to serve (None: every mode the models have).
    max_sessions: concurrent sessions (WebRTC and WebSocket together); more are told "busy".
    max_backlog: complete windows of input that may wait for a step; WebRTC input beyond them is dropped.
    stall_s: WebRTC input silent this long with an incomplete window pending: the window is padded and made.
    ice_servers: RTCIceServer dicts for the page (e.g. a TURN server); the server uses `server_ice_servers`.
    warmup: compile every mode's step at start-up (the first session then starts without compiling).
    jpeg_quality: of the WebSocket frames (default; a client may ask for another).
  """
  checkpoint: str | None = None
  random_weights: bool = False
  modes: tuple[str, ...] | None = None
  max_sessions: int = 2
  max_backlog: int = 1
  stall_s: float = 0.4
  ice_servers: list = dataclasses.field(default_factory=list)
  server_ice_servers: list = dataclasses.field(default_factory=list)
  warmup: bool = True
  jpeg_quality: int = 80


def rss_mb() -> float:
  """Resident memory of this process (MB), from /proc where available."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encode_jpeg(frames: np.ndarray, quality: int) -> list[bytes]:
  from PIL import Image

  out = []
  for frame in frames:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    out.append(buf.getvalue())
  return out


class Settings:
  """The settings of a session, checked: portrait, mode, style (with a resolved reference video)."""

  def __init__(self, server: AvatarServer, raw: Any, *, defaults: Settings | None = None):
    if not isinstance(raw, dict):
      raise LiveError("malformed", f"settings must be a JSON object, got {type(raw).__name__}")
    self.portrait = raw.get("portrait", defaults.portrait if defaults else None)
    if "image" in raw:
      try:
        data = base64.b64decode(raw["image"], validate=True)
      except (binascii.Error, TypeError, ValueError) as e:
        raise LiveError("malformed", f"'image' must be base64 image bytes ({e})") from e
      self.portrait = server.portraits.add(data, name="uploaded portrait")
    if not isinstance(self.portrait, str):
      raise LiveError("malformed", "name a portrait: 'portrait' (an id from POST /api/portraits) or 'image'")
    server.portraits.get(self.portrait)  # unknown_portrait
    self.mode = raw.get("mode", defaults.mode if defaults else server.models.modes[0])
    if self.mode not in server.models.modes:
      raise LiveError("bad_mode", f"mode must be one of {list(server.models.modes)}, got {self.mode!r}")
    base = defaults.style if defaults else Style()
    reference = raw.get("reference", defaults.reference if defaults else None) or None
    if reference is not None and reference not in server.references:
      raise LiveError("unknown_reference", f"no reference video with id {reference!r} (POST /api/references)")
    self.reference = reference
    try:
      self.style = Style(amplitude=float(raw.get("amplitude", base.amplitude)),
                         pose_range=float(raw.get("pose_range", base.pose_range)),
                         reference_video=server.references.get(reference) if reference else None)
    except (TypeError, ValueError) as e:
      raise LiveError("malformed", str(e)) from e


class AvatarServer:
  """What the app shares: the models, the portrait cache, reference videos, the live sessions."""

  def __init__(self, config: ServeConfig, models: LiveModels | None = None):
    self.config = config
    if models is None:
      modes = config.modes or MODES
      models = LiveModels.random(modes) if config.random_weights else LiveModels.load(config.checkpoint)
    if config.modes:
      missing = [m for m in config.modes if m not in models.models]
      if missing:
        raise ValueError(f"the models do not serve the modes {missing}")
      models = LiveModels({m: models.models[m] for m in config.modes}, models.options)
    self.models = models
    self.portraits = PortraitCache()
    self.bundled_portrait = self.portraits.add_file(ASSETS_PORTRAIT)
    self._tmp = tempfile.TemporaryDirectory(prefix="chatanyone_serve_")
    self.references: dict[str, str] = {}
    if BUNDLED_REFERENCE.exists():
      self.references["talking"] = str(BUNDLED_REFERENCE)
    self.sessions: dict[str, dict] = {}  # id -> {"kind", "live", "started"}
    self.opening = 0  # WebSocket sessions being prepared (they count as running)
    self.finished: list[dict] = []  # stats of the last sessions that ended
    self.stream = None  # the fastrtc Stream (create_app)

  def warmup(self) -> None:
    """Compiles every mode's step on the bundled portrait (one block of silence)."""
    portrait = self.portraits.get(self.bundled_portrait)
    for mode in self.models.modes:
      t = time.perf_counter()
      live = LiveStream(self.models, portrait, mode=mode)
      live.feed(np.zeros(live.window_samples(), np.float32))
      live.step()
      log.info("warm-up: mode %s compiled in %.1f s", mode, time.perf_counter() - t)

  def active(self) -> int:
    """Running sessions: WebSocket sessions and WebRTC peer connections (negotiating ones included)."""
    ws = sum(1 for s in self.sessions.values() if s["kind"] == "ws") + self.opening
    return ws + (len(self.stream.pcs) if self.stream is not None else 0)

  def busy(self) -> bool:
    return self.active() >= self.config.max_sessions

  def open(self, kind: str, settings: Settings, **kw) -> tuple[str, LiveStream]:
    live = LiveStream(self.models, self.portraits.get(settings.portrait), mode=settings.mode,
                      style=settings.style, max_backlog=self.config.max_backlog, **kw)
    sid = secrets.token_hex(6)
    self.sessions[sid] = {"kind": kind, "live": live, "started": time.time()}
    return sid, live

  def close(self, sid: str) -> None:
    entry = self.sessions.pop(sid, None)
    if entry is not None:
      self.finished = (self.finished + [dict(entry["live"].stats(), kind=entry["kind"], session=sid)])[-20:]

  def stats(self) -> dict:
    return {"active": self.active(), "max_sessions": self.config.max_sessions,
            "sessions": {sid: dict(s["live"].stats(), kind=s["kind"]) for sid, s in self.sessions.items()},
            "finished": self.finished, "portraits_cached": len(self.portraits),
            "portraits_annotated": self.portraits.annotations, "rss_mb": round(rss_mb(), 1),
            "peer_connections": len(self.stream.pcs) if self.stream is not None else 0}


# ------------------------------------------------------------------------------------------------ WebRTC


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
      self._error(e)
      await self._close_connection()
      return
    self.settings = settings
    self.timeline = Timeline(self.live.idle_frame())
    h, w = self.live.output_size
    self._send({"type": "avatar", "event": "ready", "session": self.sid, "mode": self.live.mode,
                "width": w, "height": h, "window": self.live.spec.window})
    self.worker = asyncio.create_task(self._work())
    self.ready.set()

  async def receive(self, frame: tuple[int, np.ndarray]) -> None:
    rate, pcm = frame
    if self.live is None or self.closed:
      return  # before the avatar is ready the input is not kept
    if rate != SAMPLE_RATE:
      self._error(LiveError("bad_audio", f"expected {SAMPLE_RATE} Hz audio, got {rate} Hz"))
      return
    self.live.feed(np.asarray(pcm, np.float32).reshape(-1) / 32768.0)
    self.last_input = time.monotonic()
    self.input_event.set()

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
    # fastrtc paces frames by int(90000 / 30) = 2999 ticks, 0.03 % fast: follow the clock instead, so that
    # unit n leaves at t0 + n / 30 like its audio (repeat a unit when ahead, skip units after a stall).
    clock_unit = int((time.monotonic() - t0) * FPS)
    n = self.video_frame
    if n > clock_unit + 1:  # video_emit(n) comes one frame period early; more than that is drift
      n -= 1
    else:
      n = max(n, clock_unit - 3)
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


# ------------------------------------------------------------------------------------------- WebSocket


async def _ws_session(server: AvatarServer, ws) -> None:
  """One /ws/live connection (module docstring)."""
  send_lock = asyncio.Lock()

  async def send_json(payload: dict) -> None:
    async with send_lock:
      await ws.send_text(json.dumps(payload))

  async def error(e: LiveError, close: bool = False) -> None:
    log.info("ws: %s (%s)", e, e.code)
    await send_json({"type": "error", "code": e.code, "message": str(e)})
    if close:
      await ws.close(WS_CLOSE_BUSY if e.code == "busy" else WS_CLOSE_POLICY)

  await ws.accept()
  if server.busy():
    await error(LiveError("busy", f"the server runs its maximum of {server.config.max_sessions} sessions; "
                                  "try again later"), close=True)
    return
  try:
    start = json.loads(await asyncio.wait_for(ws.receive_text(), 30))
    if not isinstance(start, dict) or start.get("type") != "start":
      raise LiveError("malformed", "the first message must be {\"type\": \"start\", ...} (see infer.serve)")
    fmt = start.get("format", "s16le")
    if fmt not in ("s16le", "f32le"):
      raise LiveError("bad_audio", f"format must be 's16le' or 'f32le', got {fmt!r}")
    if start.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE or start.get("channels", 1) != 1:
      raise LiveError("bad_audio", f"send {SAMPLE_RATE} Hz mono PCM (got sample_rate "
                                   f"{start.get('sample_rate')}, channels {start.get('channels', 1)})")
    overflow = start.get("overflow", "wait")
    quality = int(start.get("quality", server.config.jpeg_quality))
    send_audio = bool(start.get("audio", True))
    server.opening += 1
    try:
      settings = await asyncio.to_thread(Settings, server, start)  # may annotate an uploaded image
      sid, live = await asyncio.to_thread(server.open, "ws", settings, overflow=overflow)
    finally:
      server.opening -= 1
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
    code = e.code if isinstance(e, LiveError) else "malformed"
    await error(LiveError(code, str(e)), close=True)
    return
  except (TimeoutError, WebSocketDisconnect, RuntimeError):
    return

  progress = asyncio.Event()
  h, w = live.output_size
  await send_json({"type": "ready", "session": sid, "fps": FPS, "sample_rate": SAMPLE_RATE,
                   "window": live.spec.window, "width": w, "height": h, "mode": live.mode})

  async def send_block(block) -> None:
    jpegs = await asyncio.to_thread(encode_jpeg, block.frames, quality)
    header = {"type": "block", "index": block.index, "first_frame": block.first_frame,
              "num_frames": len(block.frames), "timestamps": [round(t, 6) for t in block.timestamps],
              "sample_start": block.sample_start, "num_samples": int(block.audio.size),
              "padded": block.padded, "mode": block.mode, "width": block.frames.shape[2],
              "height": block.frames.shape[1], "latency_s": round(block.latency_s, 4),
              "compute_s": round(block.compute_s, 4), "audio": send_audio}
    async with send_lock:
      await ws.send_text(json.dumps(header))
      for jpeg in jpegs:
        await ws.send_bytes(jpeg)
      if send_audio:
        pcm = np.clip(np.round(block.audio * 32768), -32768, 32767).astype("<i2")  # decoded as x / 32768
        await ws.send_bytes(pcm.tobytes())

  step_lock = asyncio.Lock()  # one step at a time, blocks sent in order

  async def worker() -> None:
    while True:
      await progress.wait()
      progress.clear()
      while live.ready():
        async with step_lock:
          await send_block(await asyncio.to_thread(live.step))

  task = asyncio.create_task(worker())
  try:
    while True:
      while overflow == "wait" and live.backlog_full and not task.done():
        await asyncio.sleep(0.01)  # back-pressure: stop reading until the steps catch up
      if task.done():
        task.result()  # a failed step: raise it here
      msg = await ws.receive()
      if msg["type"] == "websocket.disconnect":
        return
      if msg.get("bytes") is not None:
        data = msg["bytes"]
        width = 2 if fmt == "s16le" else 4
        if len(data) % width:
          await error(LiveError("bad_audio", f"{fmt} PCM chunks must be a multiple of {width} bytes, got "
                                             f"{len(data)}"))
          continue
        pcm = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0 if fmt == "s16le" \
            else np.frombuffer(data, "<f4")
        try:
          live.feed(pcm)
        except LiveError as e:
          await error(e)
          continue
        progress.set()
        continue
      try:
        message = json.loads(msg.get("text") or "")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "style":
          settings = Settings(server, message, defaults=settings)
          live.request(mode=settings.mode, style=settings.style)
        elif kind in ("flush", "end"):
          while True:  # the worker sends the complete windows first, then the rest is padded and sent
            if task.done():
              task.result()
            async with step_lock:
              if not live.ready():
                block = await asyncio.to_thread(live.flush)
                if block is not None:
                  await send_block(block)
                break
            await asyncio.sleep(0.01)
          if kind == "end":
            await send_json(dict(live.stats(), type="stats"))
            await send_json({"type": "end"})
            await ws.close()
            return
        else:
          raise LiveError("malformed", f"unknown message {message!r}: send binary PCM or a JSON object with "
                                       "type 'style', 'flush' or 'end'")
      except json.JSONDecodeError as e:
        await error(LiveError("malformed", f"text messages must be JSON ({e})"))
      except LiveError as e:
        await error(e)
  except WebSocketDisconnect:
    pass
  except Exception:
    log.exception("ws session %s failed", sid)
    try:
      await error(LiveError("internal", "the avatar stream failed (see the server log)"), close=True)
    except Exception:  # the socket is gone
      pass
  finally:
    task.cancel()
    server.close(sid)


# ----------------------------------------------------------------------------------------------- app


def create_app(config: ServeConfig | None = None, models: LiveModels | None = None):
  """The FastAPI app (module docstring); `app.state.avatar` is its `AvatarServer`."""
  config = config or ServeConfig()
  server = AvatarServer(config, models)
  if config.warmup:
    server.warmup()
  stream = Stream(AvatarHandler(server), mode="send-receive", modality="audio-video",
                  concurrency_limit=config.max_sessions,
                  server_rtc_configuration={"iceServers": config.server_ice_servers},
                  rtc_configuration={"iceServers": config.ice_servers}, verbose=False)
  server.stream = stream
  app = FastAPI(title="chatanyone-jax live")
  app.state.avatar = server

  @app.post("/webrtc/offer")  # before stream.mount's own route: the session limit counts both transports
  async def offer(body: Body):
    if body.type == "offer" and server.busy():
      return {"status": "failed", "meta": {"error": "concurrency_limit_reached",
                                           "limit": config.max_sessions}}
    return await stream.offer(body)

  stream.mount(app)

  @app.get("/")
  async def page():
    return FileResponse(PAGE, media_type="text/html")

  @app.get("/api/config")
  async def api_config():
    return {"modes": list(server.models.modes), "ice_servers": config.ice_servers, "fps": FPS,
            "sample_rate": SAMPLE_RATE, "max_sessions": config.max_sessions,
            "bundled_portrait": server.bundled_portrait}

  @app.get("/api/portraits")
  async def portraits():
    return {"portraits": [{"id": server.bundled_portrait, "name": "bundled portrait"}]}

  @app.get("/api/portraits/{pid}")
  async def portrait_image(pid: str):
    from PIL import Image

    try:
      image = server.portraits.get(pid).image
    except LiveError as e:
      return JSONResponse({"error": e.code, "message": str(e)}, status_code=404)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=85)
    return Response(buf.getvalue(), media_type="image/jpeg")

  @app.post("/api/portraits")
  async def upload_portrait(request: Request):
    data = await request.body()
    try:
      pid = await asyncio.to_thread(server.portraits.add, data, "uploaded portrait")
    except LiveError as e:
      return JSONResponse({"error": e.code, "message": str(e)}, status_code=422)
    return {"id": pid}

  @app.get("/api/references")
  async def references():
    return {"references": [{"id": k, "name": pathlib.Path(v).name} for k, v in server.references.items()]}

  @app.post("/api/references")
  async def upload_reference(request: Request):
    data = await request.body()
    if not data:
      return JSONResponse({"error": "malformed", "message": "send the video's bytes"}, status_code=422)
    rid = content_id(data)
    path = pathlib.Path(server._tmp.name) / f"{rid}.video"
    path.write_bytes(data)
    server.references[rid] = str(path)
    return {"id": rid}

  @app.post("/api/input")
  async def set_input(request: Request):
    try:
      body = await request.json()
      webrtc_id = body.pop("webrtc_id")
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
      return JSONResponse({"error": "malformed", "message": "send {\"webrtc_id\": ..., settings...}"},
                          status_code=400)
    if webrtc_id not in stream.connections:
      return JSONResponse({"error": "unknown_connection", "message": f"no connection {webrtc_id!r}"},
                          status_code=404)
    stream.set_input(webrtc_id, body)  # the handler reports bad settings on the data channel too
    try:
      Settings(server, body)  # checked here as well, so that the page sees the error at once
    except LiveError as e:
      return JSONResponse({"error": e.code, "message": str(e)}, status_code=422)
    return {"status": "ok"}

  @app.get("/api/stats")
  async def stats():
    return server.stats()

  @app.websocket("/ws/live")
  async def ws_live(websocket: WebSocket):
    await _ws_session(server, websocket)

  return app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m infer.serve", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 2)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", help="directory of training workdirs (default: the bundled models)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--max-sessions", type=int, default=ServeConfig.max_sessions)
  p.add_argument("--mode", action="append", choices=MODES, help="serve only this mode (repeatable)")
  p.add_argument("--ice-servers", default="[]",
                 help="JSON list of RTCIceServer dicts for the page, e.g. a TURN server (README: Live)")
  p.add_argument("--no-warmup", action="store_true", help="compile each mode on its first session instead")
  p.add_argument("--random-weights", action="store_true",
                 help="smoke test: random tiny networks instead of a checkpoint (the frames are noise)")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  import uvicorn

  args = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  ice = json.loads(args.ice_servers)
  config = ServeConfig(checkpoint=args.checkpoint, random_weights=args.random_weights,
                       modes=tuple(args.mode) if args.mode else None, max_sessions=args.max_sessions,
                       ice_servers=ice, server_ice_servers=ice, warmup=not args.no_warmup)
  app = create_app(config)
  log.info("serving on http://%s:%d/", args.host, args.port)
  uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
  main()
