"""The live server (`infer.serve`) on loopback with random tiny head models: real clients, a real browser.

One uvicorn server on 127.0.0.1 (a module fixture, in a thread of this process) serves every test: the
WebSocket client (`infer.live_client`), an aiortc WebRTC client sending a real speech file as its audio track
(fastrtc's offer / answer on /webrtc/offer), the errors, the session limit, disconnects, a small load test,
and headless Chromium with its fake microphone on the page. The frames of random networks are noise; what is
tested is the transport: frame counts for the audio sent, A/V alignment, timing, sessions, errors.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import shutil
import socket
import threading
import time
import types

import numpy as np
import pytest
from PIL import Image
from scipy import signal

from data.media import read_audio
from infer.live import LiveModels
from infer.options import StreamOptions
from infer.streaming import ASSETS_PORTRAIT, ASSETS_SPEECH
from tests.helpers import REPO, require_module, write_wav

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the server

SR = 16000
WINDOW = 16  # frames per block of the tiny models
ARTIFACTS = REPO / "outputs" / "test_artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  require_module("fastrtc", "pip install -e '.[live]'")
  import uvicorn

  from infer.serve import ServeConfig, create_app

  models = LiveModels.random(("head",), StreamOptions(mode="head", num_steps=2))
  # max_backlog 4: the whole 2-s clip may wait, so a loaded test machine does not drop windows and change the
  # frame count (the drop policy itself: tests/infer/live_test.py).
  app = create_app(ServeConfig(max_sessions=2, stall_s=0.3, max_backlog=4), models)
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  port = sock.getsockname()[1]
  uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
  thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  for _ in range(200):
    if uv.started:
      break
    time.sleep(0.05)
  tmp = tmp_path_factory.mktemp("serve")
  speech = read_audio(ASSETS_SPEECH, SR)
  wav = tmp / "speech.wav"
  write_wav(wav, speech[:2 * SR])  # 2 s of real speech: 60 frames, four blocks of 16
  yield types.SimpleNamespace(http=f"http://127.0.0.1:{port}", ws=f"ws://127.0.0.1:{port}/ws/live", app=app,
                              avatar=app.state.avatar, speech=speech, wav=wav, tmp=tmp)
  uv.should_exit = True
  thread.join(10)


def _gradient_png() -> bytes:
  """An image without a face."""
  x = np.linspace(0, 255, 160, dtype=np.uint8)
  image = np.stack(np.broadcast_arrays(x[None, :], x[:, None], np.full((160, 160), 90, np.uint8)), -1)
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
  return buf.getvalue()


def _wait_idle(server, timeout=10.0) -> dict:
  """/api/stats once no session runs (or after timeout)."""
  import httpx

  deadline = time.monotonic() + timeout
  while True:
    stats = httpx.get(server.http + "/api/stats").json()
    if (stats["active"] == 0 and not stats["sessions"]) or time.monotonic() > deadline:
      return stats
    time.sleep(0.1)


# --------------------------------------------------------------------------------------------- WebSocket


def test_websocket_client_gets_frames_timestamps_and_audio(server):
  from infer.live_client import animate

  audio = server.speech[:int(1.5 * SR)] + 0  # 1.5 s: 45 frames -> blocks of 16, 16 and 16 (the last padded)
  t = time.monotonic()
  blocks, stats = asyncio.run(animate(server.ws, str(ASSETS_PORTRAIT), audio, mode="head", chunk_ms=137))
  wall = time.monotonic() - t
  assert [b.index for b in blocks] == [0, 1, 2] and [b.first_frame for b in blocks] == [0, 16, 32]
  frames = np.concatenate([b.frames for b in blocks])
  assert frames.shape == (48, 64, 64, 3)
  assert 0 <= frames.shape[0] - round(audio.size * 30 / SR) < WINDOW  # the audio's frames, within a block
  np.testing.assert_allclose(np.concatenate([b.timestamps for b in blocks]), np.arange(48) / 30, atol=1e-5)
  # Each block comes with the audio it was made from: together, the audio sent (16-bit), then the padding.
  back = np.concatenate([b.audio for b in blocks])
  assert [b.sample_start for b in blocks] == [0, 8533, 17067] and back.size == 25600
  np.testing.assert_allclose(back[:audio.size], audio, atol=0.6 / 32768)
  assert blocks[-1].padded == 25600 - audio.size and not np.any(back[audio.size:])
  assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.1  # the frames move
  assert stats["frames"] == 48 and stats["dropped_frames"] == 0
  print(f"websocket: {stats['frames']} frames in {wall:.2f} s; server fps {stats['fps']:.1f}, first-frame "
        f"latency {stats['first_frame_latency_s']:.3f} s")
  assert _wait_idle(server)["active"] == 0


def test_websocket_errors_are_reported_on_their_connection(server):
  import httpx
  import websockets

  from infer.live_client import LiveClient, LiveClientError

  async def first_error(start) -> tuple[dict, int | None]:
    async with websockets.connect(server.ws) as ws:
      await ws.send(start)
      reply = json.loads(await ws.recv())
      try:
        await asyncio.wait_for(ws.recv(), 5)
      except websockets.ConnectionClosed as e:
        return reply, e.rcvd.code if e.rcvd else None
      return reply, None

  async def session_survives_bad_messages():
    async with LiveClient(server.ws, portrait_id=server.avatar.bundled_portrait, audio=False) as client:
      replies = []
      for bad in ("not json", json.dumps({"type": "dance"}), b"\x01\x02\x03",
                  json.dumps({"type": "style", "mode": "upper"}),
                  json.dumps({"type": "style", "reference": "nope"})):
        await client.send_raw(bad)
        try:
          await client._next_json()
        except LiveClientError as e:
          replies.append(e.code)
      await client.send(server.speech[:8533])  # the session still works
      await client.end()
      return replies, [b async for b in client.blocks()]

  no_face = json.dumps({"type": "start", "image": base64.b64encode(_gradient_png()).decode(), "mode": "head"})
  cases = [(no_face, "no_face"), (b"\x00\x01", "malformed"), ("{", "malformed"),
           (json.dumps({"type": "hello"}), "malformed"),
           (json.dumps({"type": "start", "portrait": "nope"}), "unknown_portrait"),
           (json.dumps({"type": "start", "portrait": server.avatar.bundled_portrait, "sample_rate": 44100}),
            "bad_audio"),
           (json.dumps({"type": "start", "portrait": server.avatar.bundled_portrait, "format": "mp3"}),
            "bad_audio")]
  for start, code in cases:
    reply, close_code = asyncio.run(first_error(start))
    assert reply["type"] == "error" and reply["code"] == code, (start[:40], reply)
    assert close_code == 1008
  reply, _ = asyncio.run(first_error(no_face))
  assert "no face found" in reply["message"]
  async def session(**style):
    async with LiveClient(server.ws, portrait_id=server.avatar.bundled_portrait, audio=False) as client:
      if style:
        await client.style(**style)
      await client.send(server.speech[:8533])
      await client.end()
      return [b async for b in client.blocks()]

  codes, blocks = asyncio.run(session_survives_bad_messages())
  assert codes == ["malformed", "malformed", "bad_audio", "bad_mode", "unknown_reference"]
  assert len(blocks) == 1 and blocks[0].frames.shape == (16, 64, 64, 3)
  # A style message reaches the stream: larger expressions and a smaller pose range change the frames of
  # the same speech (the rejected messages above changed nothing: a plain session makes the same). The
  # reference video's effect is tested on LiveStream (tests/infer/live_test.py), where it costs no server.
  plain = asyncio.run(session())
  styled = asyncio.run(session(amplitude=2.0, pose_range=0.5))
  np.testing.assert_array_equal(plain[0].frames, blocks[0].frames)
  change = np.abs(styled[0].frames.astype(int) - plain[0].frames).mean()
  assert change > 0.5, change
  # The same checks over HTTP: an upload without a face, bad settings for a connection that does not exist.
  r = httpx.post(server.http + "/api/portraits", content=_gradient_png())
  assert r.status_code == 422 and r.json()["error"] == "no_face"
  r = httpx.post(server.http + "/api/input", json={"webrtc_id": "nope", "portrait": "x"})
  assert r.status_code == 404
  assert _wait_idle(server)["active"] == 0


def test_session_limit_disconnects_and_load(server):
  """max_sessions = 2: a third client is told busy (both transports); a client that disconnects mid-stream
  frees its session; rounds of concurrent clients leave no session behind and memory flat."""
  import httpx
  import websockets

  from infer.live_client import LiveClient, animate

  audio = server.speech[:SR]

  async def busy_while_two_run():
    async with LiveClient(server.ws, portrait_id=server.avatar.bundled_portrait), \
        LiveClient(server.ws, portrait_id=server.avatar.bundled_portrait):
      async with websockets.connect(server.ws) as ws:
        reply = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
          await ws.recv()
      async with httpx.AsyncClient() as http:
        offer = (await http.post(server.http + "/webrtc/offer",
                                 json={"sdp": "v=0", "type": "offer", "webrtc_id": "x"})).json()
      return reply, closed.value.rcvd.code, offer

  reply, code, offer = asyncio.run(busy_while_two_run())
  assert reply["code"] == "busy" and "maximum of 2 sessions" in reply["message"] and code == 1013
  assert offer == {"status": "failed", "meta": {"error": "concurrency_limit_reached", "limit": 2}}

  async def disconnect_mid_stream():
    client = LiveClient(server.ws, portrait_id=server.avatar.bundled_portrait)
    await client.__aenter__()
    await client.send(server.speech[:3 * 8533])  # three windows
    async for _ in client.blocks():
      break  # one block, then the client goes away with two windows in flight
    await client.close()

  asyncio.run(disconnect_mid_stream())
  stats = _wait_idle(server)
  assert stats["active"] == 0 and not stats["sessions"] and stats["finished"][-1]["frames"] >= 16

  async def round_of_clients(n):
    results = await asyncio.gather(*[animate(server.ws, str(ASSETS_PORTRAIT), audio, mode="head")
                                     for _ in range(n)])
    return [sum(len(b.frames) for b in blocks) for blocks, _ in results]

  rss = []
  t = time.monotonic()
  for _ in range(4):
    assert asyncio.run(round_of_clients(2)) == [32, 32]
    stats = _wait_idle(server)
    assert stats["active"] == 0 and not stats["sessions"]
    rss.append(stats["rss_mb"])
  print(f"load: 4 rounds of 2 concurrent clients in {time.monotonic() - t:.1f} s; RSS (MB) {rss}")
  assert rss[-1] - rss[0] < 64, rss  # flat: nothing accumulates per session
  assert stats["portraits_annotated"] == 1  # the uploaded bundled portrait hit the cache every time


# ----------------------------------------------------------------------------------------------- WebRTC


async def _webrtc_call(server, wav, *, settings: dict, hang_up_after_blocks: int | None = None,
                       timeout: float = 40.0):
  """An aiortc client: the WAV as its audio track, a blank video track, fastrtc's data channel protocol.
  Returns (messages, video frames, audio frames) as received, or the offer's answer when it failed."""
  import httpx
  from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
  from aiortc.contrib.media import MediaPlayer
  from aiortc.mediastreams import MediaStreamError

  expected_frames = round(read_audio(wav, SR).size * 30 / SR)
  pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
  player = MediaPlayer(str(wav))
  pc.addTrack(player.audio)
  pc.addTrack(VideoStreamTrack())
  channel = pc.createDataChannel("text")
  webrtc_id = secrets.token_hex(6)
  messages, video, audio, tasks = [], [], [], []
  async with httpx.AsyncClient(base_url=server.http) as http:

    @channel.on("message")
    def on_message(message):
      msg = json.loads(message)
      messages.append(msg)
      if msg.get("type") == "send_input":
        body = {"webrtc_id": webrtc_id, **settings}
        tasks.append(asyncio.ensure_future(http.post("/api/input", json=body)))

    async def consume(track, out):
      try:
        while True:
          frame = await track.recv()
          out.append((time.monotonic(), frame))
      except MediaStreamError:
        pass

    @pc.on("track")
    def on_track(track):
      tasks.append(asyncio.ensure_future(consume(track, video if track.kind == "video" else audio)))

    await pc.setLocalDescription(await pc.createOffer())
    answer = (await http.post("/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer",
                                                     "webrtc_id": webrtc_id})).json()
    if answer.get("status") == "failed":
      await pc.close()
      return answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    deadline = time.monotonic() + timeout
    blocks = lambda: [m for m in messages if m.get("type") == "avatar" and m.get("event") == "block"]
    while time.monotonic() < deadline:
      done = blocks()
      if hang_up_after_blocks is not None and len(done) >= hang_up_after_blocks:
        break
      if sum(b["num_frames"] for b in done) >= expected_frames and \
          len(video) > done[-1]["unit"] + done[-1]["num_frames"] + 3:
        break  # every frame of the audio made and played out
      if any(m.get("type") == "avatar" and m.get("event") == "error" for m in messages):
        break
      await asyncio.sleep(0.05)
    await pc.close()
    for task in tasks:
      task.cancel()
  return messages, video, audio


def test_webrtc_handler_keeps_the_newest_input_while_its_session_starts():
  """Before its session is open the handler keeps what the microphone sends (the newest EARLY_INPUT_S, with
  arrival times) for the session's first blocks; a handler whose session failed to start keeps nothing."""
  require_module("fastrtc", "pip install -e '.[live]'")
  from infer import live_webrtc

  handler = live_webrtc.AvatarHandler(server=None)
  frames = np.arange(12 * SR, dtype=np.int16).reshape(-1, 320) % 1000  # 12 s in 20-ms frames, numbered
  for f in frames:
    asyncio.run(handler.receive((SR, f[None])))
  kept = handler._take_early()
  samples = sum(pcm.size for pcm, _ in kept)
  assert 10 * SR <= samples < 10 * SR + 320  # the newest 10 s, in whole frames
  np.testing.assert_allclose(kept[-1][0], frames[-1] / 32768.0)  # in order, the last frame last
  np.testing.assert_allclose(kept[0][0], frames[-len(kept)] / 32768.0)
  assert [t for _, t in kept] == sorted(t for _, t in kept)
  assert handler.early_samples == 0 and not handler.early
  handler.closed = True  # what a failed start leaves (the connection is closing)
  asyncio.run(handler.receive((SR, frames[0][None])))
  assert not handler.early


def test_webrtc_client_receives_aligned_video_and_audio(server):
  pytest.importorskip("aiortc")
  settings = {"portrait": server.avatar.bundled_portrait, "mode": "head"}
  t = time.monotonic()
  messages, video, audio = asyncio.run(_webrtc_call(server, server.wav, settings=settings))
  wall = time.monotonic() - t
  events = [m for m in messages if m.get("type") == "avatar"]
  assert events[0]["event"] == "ready", events[:2]
  blocks = [m for m in events if m["event"] == "block"]
  # Frames for the audio sent: 2 s -> 60 frames, in blocks of 16 (the last one padded once the input ended).
  made = sum(b["num_frames"] for b in blocks)
  assert made == 64 and 0 <= made - 60 < WINDOW, [b["num_frames"] for b in blocks]
  units = [b["unit"] for b in blocks]
  assert all(b - a >= WINDOW for a, b in zip(units, units[1:], strict=False))

  # Video: frame n of the track is unit n of the server's timeline (fastrtc's pts step: 2999 at 90 kHz).
  pts0 = video[0][1].pts
  index = [round((f.pts - pts0) / 2999) for _, f in video]
  assert index == sorted(index)
  frames = {i: f.to_ndarray(format="rgb24").astype(np.int16) for i, (_, f) in zip(index, video, strict=True)}
  idle = frames[index[0]]
  change = {i: np.abs(f - idle).mean() for i, f in frames.items()}
  generated = {b["unit"] + k for b in blocks for k in range(b["num_frames"])}
  first_video = min(i for i, c in change.items() if c > 3)
  before = [c for i, c in change.items() if i < units[0]]
  # The frames switch at the block's unit: never before it, and the generated frames leave the portrait at
  # once (the first one can be close to it: the face starts at rest; measured 31 vs 30 once at change > 8).
  assert units[0] <= first_video <= units[0] + 2, (first_video, units[0])
  assert before and max(before) < 3, before  # the portrait until then
  inside = [change[i] for i in generated if i in frames]
  assert len(inside) >= 0.9 * len(generated) and np.median(inside) > 8

  # Audio: the speech sent comes back at the units of its frames (cross-correlation with what was sent).
  a_pts0 = audio[0][1].pts
  pcm = np.zeros(max(f.pts - a_pts0 + f.samples for _, f in audio), np.float32)
  for _, f in audio:
    x = f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0].astype(np.float32) / 32768
    pcm[f.pts - a_pts0:f.pts - a_pts0 + x.size] = x
  sent = signal.resample_poly(read_audio(server.wav, SR), 3, 1)
  corr = signal.correlate(pcm, sent[:48000], mode="valid", method="fft")
  lag = int(np.argmax(corr))
  offset_ms = (lag - units[0] * 1600) / 48
  # Within a frame (measured +13.7 ms: Opus and the upsampler). The speech that arrives while the session
  # starts is kept: dropped, it shifted the offset by what was lost (-46 to -226 ms measured).
  assert abs(offset_ms) < 34, offset_ms
  stats = blocks[-1]["stats"]
  print(f"webrtc: {len(video)} video frames, {len(audio)} audio frames in {wall:.1f} s; audio - video "
        f"{offset_ms:+.1f} ms; server fps {stats['fps']:.1f}, first-frame latency "
        f"{stats['first_frame_latency_s']:.3f} s")
  stats = _wait_idle(server)
  assert stats["active"] == 0 and stats["peer_connections"] == 0 and not stats["sessions"]


def test_webrtc_video_never_skips_units_when_late(monkeypatch):
  # fastrtc stamps the k-th frame with pts k · 2999 whenever it leaves: a unit skipped after a stall would
  # put every later frame ahead of its audio at the receiver. Late frames go out in order; frames ahead of
  # the clock repeat a unit (fastrtc's 2999-tick pts run 0.03 % fast).
  from infer import live_webrtc
  from infer.timeline import Timeline

  clock = [100.0]
  monkeypatch.setattr(live_webrtc.time, "monotonic", lambda: clock[0])
  handler = live_webrtc.AvatarHandler(server=None)
  handler.timeline = Timeline(np.zeros((2, 2, 3), np.uint8))
  handler.ready.set()

  def emit_at(t: float) -> int:
    clock[0] = 100.0 + t
    asyncio.run(handler.video_emit())
    return handler.timeline.read_position - 1  # the unit just read

  units = [emit_at(k / 30) for k in range(3)]
  units += [emit_at(1.0) for _ in range(5)]  # a 0.9-s stall: the next units leave at once, none skipped
  assert units == list(range(8)), units
  handler.video_frame = 40  # ahead of the clock (unit 30 at t = 1 s): the unit is shown again
  assert [emit_at(1.0) for _ in range(2)] == [39, 39]


def test_webrtc_hang_up_mid_stream_and_no_face(server):
  pytest.importorskip("aiortc")
  settings = {"portrait": server.avatar.bundled_portrait, "mode": "head"}
  messages, _, _ = asyncio.run(_webrtc_call(server, server.wav, settings=settings, hang_up_after_blocks=1))
  assert any(m.get("event") == "block" for m in messages)
  stats = _wait_idle(server)
  assert stats["active"] == 0 and stats["peer_connections"] == 0 and not stats["sessions"]
  # Settings the server cannot serve: an error on the data channel, then it hangs up (others go on).
  messages, _, _ = asyncio.run(_webrtc_call(server, server.wav, settings={"portrait": "0" * 16}, timeout=10))
  errors = [m for m in messages if m.get("event") == "error"]
  assert errors and errors[0]["code"] == "unknown_portrait"
  assert _wait_idle(server)["active"] == 0


# ---------------------------------------------------------------------------------------------- browser


def _chromium() -> str:
  path = shutil.which("chromium") or "/usr/bin/chromium"
  if not os.path.exists(path):
    msg = "Debian's chromium is not installed (apt-get install -y chromium; `make test` does it)"
    if os.environ.get("CI"):
      pytest.fail(msg)
    pytest.skip(msg)
  return path


def test_browser_page_streams_the_avatar(server, tmp_path):
  require_module("playwright", "pip install -e '.[live]'")
  from playwright.sync_api import sync_playwright

  chromium = _chromium()
  wav = tmp_path / "mic.wav"
  write_wav(wav, server.speech[:3 * SR])  # Chromium's fake microphone loops this file
  args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
          f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"]
  ARTIFACTS.mkdir(parents=True, exist_ok=True)
  with sync_playwright() as p:
    browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                   args=args, headless=True)
    try:
      page = browser.new_page()
      page.goto(server.http + "/")
      page.wait_for_function("document.querySelectorAll('#portrait option').length > 0")
      page.check("input[name=mode][value=head]")
      page.click("#start")
      page.wait_for_function("() => { const v = document.getElementById('avatar'); return v.videoWidth > 0"
                             " && v.getVideoPlaybackQuality().totalVideoFrames > 45 }", timeout=40000)
      page.wait_for_function("document.getElementById('stat-fps').textContent !== '-'", timeout=20000)
      played = page.evaluate("() => { const v = document.getElementById('avatar'); return {w: v.videoWidth,"
                             " h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames,"
                             " t: v.currentTime, paused: v.paused} }")
      shown = {k: page.text_content(f"#stat-{k}") for k in ("latency", "fps", "frames", "mode")}
      page.screenshot(path=str(ARTIFACTS / "live_page.png"))
      page.click("#stop")
    finally:
      browser.close()
  print("browser:", played, shown)
  assert played["w"] == 64 and played["h"] == 64 and played["t"] > 1.0 and not played["paused"]
  assert shown["mode"] == "head" and float(shown["fps"]) > 0 and shown["latency"].endswith(" s")
  assert (ARTIFACTS / "live_page.png").stat().st_size > 10_000
  assert _wait_idle(server, timeout=40)["peer_connections"] == 0  # the browser's hang-up freed the session


def test_serve_command_line():
  from infer.serve import parse_args

  args = parse_args(["--port", "9000", "--mode", "head", "--max-sessions", "3",
                     "--ice-servers", '[{"urls": "turn:turn.example.org:3478"}]'])
  assert (args.host, args.port, args.mode, args.max_sessions) == ("127.0.0.1", 9000, ["head"], 3)
  assert json.loads(args.ice_servers)[0]["urls"].startswith("turn:")
  # Low latency by default (issue 24), as the server's config; whole windows on request.
  from infer.live_server import ServeConfig
  from infer.options import LOW_LATENCY

  assert args.latency == "low" and parse_args(["--latency", "window"]).latency == "window"
  c = ServeConfig()
  assert {"hop": c.hop, "lookahead": c.lookahead, "seam_frames": c.seam_frames} == LOW_LATENCY
