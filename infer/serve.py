"""The live avatar server: a FastAPI app with a fastrtc WebRTC stream, a PCM WebSocket and a page.

  python -m infer.serve [--checkpoint DIR] [--host 127.0.0.1] [--port 8000] [--max-sessions 2]
                        [--latency low|window]

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
             "num_samples", "padded", "mode", "latency_s", "speech_latency_s", "compute_s"}, then num_frames
             binary JPEG frames, then (with "audio": true) the block's input audio as one binary s16le message
  server -> {"type": "error", "code", "message"} (the connection stays open, except after a failed start),
            {"type": "stats", ...} and {"type": "end"} after "end", then it closes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import pathlib
from collections.abc import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # fastrtc imports gradio: no network at run time
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastrtc import Stream
from fastrtc.stream import Body

from chatanyone_jax.stream_spec import FPS, MODES, SAMPLE_RATE
from infer.live import LiveError, LiveModels
from infer.live_server import AvatarServer, ServeConfig, Settings
from infer.live_webrtc import AvatarHandler
from infer.live_websocket import ws_session
from infer.options import LOW_LATENCY, WHOLE_WINDOWS
from infer.streaming import ASSETS

__all__ = ["ServeConfig", "create_app", "main", "parse_args"]

log = logging.getLogger(__name__)

PAGE = ASSETS / "live.html"


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
    rid = server.add_reference(data)
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
    await ws_session(server, websocket)

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
  p.add_argument("--latency", choices=("low", "window"), default="low",
                 help=f"low (default): a step every {LOW_LATENCY['hop']} frames with "
                      f"{LOW_LATENCY['lookahead']} frames of look-ahead, 300 ms of algorithmic latency "
                      "(infer.options.LOW_LATENCY); window: a step per 1.33 s motion window (fewer, larger "
                      "steps: more frames per second on a CPU, 1.3 s later)")
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
                       ice_servers=ice, server_ice_servers=ice, warmup=not args.no_warmup,
                       **(LOW_LATENCY if args.latency == "low" else WHOLE_WINDOWS))
  app = create_app(config)
  log.info("serving on http://%s:%d/", args.host, args.port)
  uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
  main()
