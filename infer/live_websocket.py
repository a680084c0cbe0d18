"""The PCM WebSocket of the live server (/ws/live): `ws_session` serves one connection.

The protocol is in `infer.serve`'s docstring and `infer.live_client` implements it. The session is the same
state machine as the page's (`infer.live.LiveStream`), with overflow "wait" by default: while steps are
behind, the server stops reading, so that a producer faster than real time (a TTS) loses no audio.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import numpy as np
from starlette.websockets import WebSocketDisconnect

from chatanyone_jax.stream_spec import FPS, SAMPLE_RATE
from infer.live import LiveError
from infer.live_server import AvatarServer, Settings

log = logging.getLogger(__name__)

WS_CLOSE_BUSY, WS_CLOSE_POLICY = 1013, 1008  # RFC 6455: try again later, policy violation


def encode_jpeg(frames: np.ndarray, quality: int) -> list[bytes]:
  from PIL import Image

  out = []
  for frame in frames:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    out.append(buf.getvalue())
  return out


async def ws_session(server: AvatarServer, ws) -> None:
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
              "speech_latency_s": round(block.speech_latency_s, 4),
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
