"""A Python client of the live server's PCM WebSocket (`python -m infer.serve`, endpoint /ws/live).

For integrators feeding the avatar from a TTS or an LLM voice pipeline: send 16 kHz mono PCM as it is made,
receive the frames with their timestamps (frame n is at n / 30 s of the audio sent) and, if asked, the audio
each block was made from:

  async with LiveClient("ws://127.0.0.1:8000/ws/live", portrait="portrait.jpg", mode="head") as client:
    await client.send(pcm)                 # float in [-1, 1] or int16, any chunk sizes, as often as wanted
    await client.style(amplitude=1.5)      # from the next block on
    await client.end()                     # the last partial window is padded with silence and sent
    async for block in client.blocks():    # ClientBlock: frames (K, H, W, 3) uint8, timestamps, audio
      ...

`blocks()` may run concurrently with `send` (e.g. in another task); it ends after `end()` once the server has
sent everything. Errors the server reports raise `LiveClientError` (its `code`: "busy", "no_face",
"bad_audio", "malformed", ...). The protocol is in `infer.serve`'s docstring. As a command:

  python -m infer.live_client --url ws://127.0.0.1:8000/ws/live --image portrait.jpg --audio speech.wav \
      --out avatar.mp4 [--mode head] [--chunk-ms 200] [--realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import io
import json
import os
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np

SAMPLE_RATE = 16000  # the server's input rate (`chatanyone_jax.stream_spec.SAMPLE_RATE`)


class LiveClientError(RuntimeError):
  """An error the server reported; `code` names it."""

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code = code


@dataclasses.dataclass
class ClientBlock:
  """One block as received: frames decoded, timestamps in seconds of the audio sent, arrival time."""
  index: int
  first_frame: int
  frames: np.ndarray  # (K, H, W, 3) uint8
  timestamps: np.ndarray  # (K,) seconds
  audio: np.ndarray | None  # (L,) float32 16 kHz: the audio the block was made from
  sample_start: int
  padded: int
  mode: str
  latency_s: float  # server side: last input sample of the block -> frames ready
  received: float  # time.monotonic() at arrival


def _decode_jpeg(data: bytes) -> np.ndarray:
  from PIL import Image

  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))


def to_pcm16(audio: np.ndarray) -> bytes:
  """float in [-1, 1] (x · 32768, clipped) or int16 samples -> s16le bytes."""
  audio = np.asarray(audio)
  if audio.dtype != np.int16:
    audio = np.clip(np.round(audio.astype(np.float32) * 32768), -32768, 32767).astype(np.int16)
  return audio.astype("<i2").tobytes()


class LiveClient:
  """An /ws/live session (module docstring).

  Args:
    url: ws://host:port/ws/live.
    portrait: an image path or bytes (uploaded with the start message), or `portrait_id` instead.
    portrait_id: the id of a portrait the server has (POST /api/portraits, or /api/config's bundled one).
    mode, amplitude, pose_range, reference: the style (`infer.options.Style`; reference: an id from
      POST /api/references).
    overflow: "wait" (the server stops reading while it is behind: no audio is lost) or "drop".
    audio: ask for each block's audio.
    quality: JPEG quality of the frames.
  """

  def __init__(self, url: str, *, portrait: str | os.PathLike | bytes | None = None,
               portrait_id: str | None = None, mode: str | None = None, amplitude: float = 1.0,
               pose_range: float = 1.0, reference: str | None = None, overflow: str = "wait",
               audio: bool = True, quality: int = 80):
    start: dict = {"type": "start", "format": "s16le", "sample_rate": SAMPLE_RATE, "amplitude": amplitude,
                   "pose_range": pose_range, "overflow": overflow, "audio": audio, "quality": quality}
    if portrait is not None:
      data = portrait if isinstance(portrait, bytes) else open(portrait, "rb").read()
      start["image"] = base64.b64encode(data).decode()
    elif portrait_id is not None:
      start["portrait"] = portrait_id
    if mode is not None:
      start["mode"] = mode
    if reference is not None:
      start["reference"] = reference
    self.url, self._start = url, start
    self._ws = None
    self.ready: dict | None = None
    self.stats: dict | None = None

  async def __aenter__(self) -> LiveClient:
    import websockets

    self._ws = await websockets.connect(self.url, max_size=None)
    await self._ws.send(json.dumps(self._start))
    self.ready = await self._next_json()
    return self

  async def __aexit__(self, *exc) -> None:
    await self.close()

  async def close(self) -> None:
    if self._ws is not None:
      await self._ws.close()

  async def _next_json(self) -> dict:
    import websockets

    try:
      message = await self._ws.recv()
    except websockets.ConnectionClosed as e:
      raise LiveClientError("closed", f"the server closed the connection ({e})") from e
    if isinstance(message, bytes):
      raise LiveClientError("protocol", "expected a JSON message, got binary data")
    payload = json.loads(message)
    if payload.get("type") == "error":
      raise LiveClientError(payload.get("code", "error"), payload.get("message", ""))
    return payload

  async def send(self, audio: np.ndarray) -> None:
    """16 kHz mono samples (float in [-1, 1] or int16), any length."""
    await self._ws.send(to_pcm16(audio))

  async def send_raw(self, message: str | bytes) -> None:
    """A raw message (tests of the server's checks)."""
    await self._ws.send(message)

  async def style(self, **settings) -> None:
    """Changes amplitude, pose_range, mode or reference from the next block on."""
    await self._ws.send(json.dumps({"type": "style", **settings}))

  async def flush(self) -> None:
    """Pads the pending audio to a whole window with silence and has it sent (the stream goes on)."""
    await self._ws.send(json.dumps({"type": "flush"}))

  async def end(self) -> None:
    """Like flush, then the server sends its stats and closes; `blocks()` ends."""
    await self._ws.send(json.dumps({"type": "end"}))

  async def blocks(self) -> AsyncIterator[ClientBlock]:
    """The blocks as they arrive, until the server ends the session."""
    while True:
      header = await self._next_json()
      if header["type"] == "stats":
        self.stats = header
        continue
      if header["type"] == "end":
        return
      if header["type"] != "block":
        continue
      frames = [_decode_jpeg(await self._ws.recv()) for _ in range(header["num_frames"])]
      audio = None
      if header.get("audio"):
        audio = np.frombuffer(await self._ws.recv(), "<i2").astype(np.float32) / 32768.0
      yield ClientBlock(header["index"], header["first_frame"], np.stack(frames),
                        np.asarray(header["timestamps"]), audio, header["sample_start"], header["padded"],
                        header["mode"], header["latency_s"], time.monotonic())


async def animate(url: str, image: str, audio: np.ndarray, *, mode: str | None = None, chunk_ms: int = 200,
                  realtime: bool = False) -> tuple[list[ClientBlock], dict]:
  """Streams `audio` (16 kHz float) to the server in chunks; returns the blocks and the server's stats."""
  async with LiveClient(url, portrait=image, mode=mode) as client:
    chunk = SAMPLE_RATE * chunk_ms // 1000

    async def sender():
      for i in range(0, audio.size, chunk):
        await client.send(audio[i:i + chunk])
        if realtime:
          await asyncio.sleep(chunk_ms / 1000)
      await client.end()

    task = asyncio.create_task(sender())
    blocks = [block async for block in client.blocks()]
    await task
    return blocks, client.stats


def main(argv: Sequence[str] | None = None) -> int:
  from data.media import read_audio
  from infer.media import write_video

  p = argparse.ArgumentParser(prog="python -m infer.live_client", description=__doc__.split("\n\n")[0])
  p.add_argument("--url", default="ws://127.0.0.1:8000/ws/live")
  p.add_argument("--image", required=True)
  p.add_argument("--audio", required=True)
  p.add_argument("--out", required=True, help="output .mp4 (the frames received, with the audio sent back)")
  p.add_argument("--mode")
  p.add_argument("--chunk-ms", type=int, default=200)
  p.add_argument("--realtime", action="store_true", help="send the audio at its real-time rate")
  args = p.parse_args(argv)
  blocks, stats = asyncio.run(animate(args.url, args.image, read_audio(args.audio, SAMPLE_RATE),
                                      mode=args.mode, chunk_ms=args.chunk_ms, realtime=args.realtime))
  frames = np.concatenate([b.frames for b in blocks])
  audio = np.concatenate([b.audio for b in blocks])
  write_video(args.out, frames, audio=audio)
  print(json.dumps(stats, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
