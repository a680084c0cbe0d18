"""The state of a live server (`infer.serve`): its configuration, the models, portraits, references, sessions.

`AvatarServer` is shared by both transports (`infer.live_webrtc`, `infer.live_websocket`): it loads the models
once, annotates portraits once (`infer.live.PortraitCache`), opens one `infer.live.LiveStream` per connection
and counts the running sessions against `ServeConfig.max_sessions`. `Settings` checks what a client asks for.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
import resource
import secrets
import tempfile
import time
from typing import Any

import numpy as np

from chatanyone_jax.stream_spec import MODES
from infer.live import LiveError, LiveModels, LiveStream, PortraitCache, content_id
from infer.options import LOW_LATENCY, StreamOptions, Style
from infer.streaming import ASSETS, ASSETS_PORTRAIT

log = logging.getLogger(__name__)

BUNDLED_REFERENCE = ASSETS / "talking.mp4"


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
    hop, lookahead, seam_frames: the stream's step and joins (`infer.options.StreamOptions`; hop None =
      whole motion windows); `infer.options.LOW_LATENCY` by default, the CLI's --latency window for whole
      windows.
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
  hop: int | None = LOW_LATENCY["hop"]
  lookahead: int = LOW_LATENCY["lookahead"]
  seam_frames: int = LOW_LATENCY["seam_frames"]


def rss_mb() -> float:
  """Resident memory of this process (MB), from /proc where available."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
      options = StreamOptions(hop=config.hop, lookahead=config.lookahead, seam_frames=config.seam_frames)
      models = (LiveModels.random(modes, options) if config.random_weights
                else LiveModels.load(config.checkpoint, options))
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

  def add_reference(self, data: bytes) -> str:
    """Keeps an uploaded reference video (checked when a session uses it); returns its id."""
    rid = content_id(data)
    path = os.path.join(self._tmp.name, f"{rid}.video")
    with open(path, "wb") as f:
      f.write(data)
    self.references[rid] = path
    return rid

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
