"""`make demo`: the newest end-to-end path on the bundled portrait and speech.

Today (foundation stage, no trained networks yet) this is a non-learned,
audio-driven keypoint warp that exercises the renderer's core ops on real
media: speech loudness per video frame -> mouth / head keypoint motion ->
Gaussian-weighted dense flow (`keypoint_flow`, LivePortrait's sparse-motion
composition without the learned mask) -> `grid_sample` of the portrait ->
h264 mp4 with the speech muxed in, plus a contact sheet and a JSON summary.
The keypoint layout assumes a centred, cropped head shot (LivePortrait's
crop); landmark-driven keypoints and the learned renderer replace it in later
issues, and this command then runs the full audio-to-video demo.

  python -m infer.demo --out outputs/demo [--image P] [--audio A] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.ops import grid_sample, keypoint_flow
from infer import media

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
SAMPLE_RATE = 16000

# Source keypoints (x, y) in [-1, 1] for a centred head crop.
HEAD = np.array([[0.0, -0.45], [-0.35, -0.15], [0.35, -0.15], [-0.3, 0.2], [0.3, 0.2],
                 [-0.2, -0.1], [0.2, -0.1]], np.float32)  # forehead, temples, cheeks, eyes
MOUTH = np.array([[0.0, 0.36], [-0.13, 0.30], [0.13, 0.30], [0.0, 0.55]], np.float32)  # lip, corners, chin
BORDER = np.array([[x, y] for x in (-0.95, 0.0, 0.95) for y in (-0.95, 0.95)]
                  + [[-0.95, 0.0], [0.95, 0.0]], np.float32)  # static background


def loudness_envelope(audio: np.ndarray, fps: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Per-video-frame RMS loudness in [0, 1] (95th percentile -> 1); silence -> 0."""
  hop = sample_rate / fps
  n = int(len(audio) / hop)
  rms = np.array([np.sqrt(np.mean(np.square(audio[int(i * hop):int((i + 1) * hop)]) + 1e-12))
                  for i in range(n)], np.float32)
  gate = 0.01  # about -40 dBFS: below this the mouth stays closed
  rms = np.maximum(rms - gate, 0)
  ref = np.percentile(rms, 95) if np.any(rms > 0) else 1.0
  env = np.clip(rms / max(ref, 1e-6), 0, 1)
  # Light smoothing (speech articulators move at < ~10 Hz).
  kernel = np.array([0.25, 0.5, 0.25], np.float32)
  return np.convolve(np.pad(env, 1, mode="edge"), kernel, mode="valid").astype(np.float32)


def driving_keypoints(env: np.ndarray, fps: int, sway: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Source (K, 2) and per-frame driving (T, K, 2) keypoints from the envelope."""
  src = np.concatenate([HEAD, MOUTH, BORDER])
  t = np.arange(len(env), dtype=np.float32) / fps
  angle = sway * np.deg2rad(3.0 * np.sin(2 * np.pi * t / 3.3) + 1.5 * np.sin(2 * np.pi * t / 1.7))
  nod = sway * 0.02 * np.sin(2 * np.pi * t / 2.3)
  pivot = np.array([0.0, 0.7], np.float32)  # neck
  cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
  moving = np.concatenate([HEAD, MOUTH])[None] - pivot  # (1, Km, 2)
  rot = np.stack([cos * moving[..., 0] - sin * moving[..., 1],
                  sin * moving[..., 0] + cos * moving[..., 1]], -1) + pivot
  rot[..., 1] += nod[:, None]
  nh = len(HEAD)
  rot[:, nh + 0, 1] += 0.06 * env  # lower lip down
  rot[:, nh + 3, 1] += 0.08 * env  # chin down
  rot[:, nh + 1, 0] += 0.02 * env  # corners inward
  rot[:, nh + 2, 0] -= 0.02 * env
  drv = np.concatenate([rot, np.broadcast_to(BORDER, (len(env),) + BORDER.shape)], axis=1)
  return src, drv.astype(np.float32)


@jax.jit
def render_chunk(image: jax.Array, kp_source: jax.Array, kp_driving: jax.Array) -> jax.Array:
  """(H, W, 3) float image, (K, 2), (T, K, 2) -> (T, H, W, 3) uint8 frames."""
  t = kp_driving.shape[0]
  flow = keypoint_flow(jnp.broadcast_to(kp_source, kp_driving.shape), kp_driving, image.shape[:2])
  frames = grid_sample(jnp.broadcast_to(image, (t,) + image.shape), flow, align_corners=True)
  return jnp.clip(jnp.round(frames * 255), 0, 255).astype(jnp.uint8)


def center_square(image: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image
  h, w = image.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  crop = image[top:top + s, left:left + s]
  return np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS))


def contact_sheet(frames: np.ndarray, n: int = 8) -> np.ndarray:
  idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int)
  return np.concatenate([frames[i] for i in idx], axis=1)


def run(image_path, audio_path, out_dir, *, size: int = 256, fps: int = 25, chunk: int = 25,
        max_seconds: float | None = None, sway: float = 1.0) -> dict:
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  image = center_square(media.read_image(image_path), size)
  audio = media.read_audio(audio_path, SAMPLE_RATE)
  if max_seconds is not None:
    audio = audio[: int(max_seconds * SAMPLE_RATE)]
  env = loudness_envelope(audio, fps)
  if len(env) == 0:
    raise media.MediaError(f"{audio_path} is shorter than one video frame")
  src, drv = driving_keypoints(env, fps, sway)
  img = jnp.asarray(image, jnp.float32) / 255.0

  # Fixed-size chunks (the last one padded) so the jitted step compiles once,
  # as the streaming step will.
  t0 = time.perf_counter()
  frames = []
  for start in range(0, len(drv), chunk):
    part = drv[start:start + chunk]
    pad = chunk - len(part)
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
    frames.append(np.asarray(render_chunk(img, jnp.asarray(src), jnp.asarray(part)))[:chunk - pad])
  frames = np.concatenate(frames)
  render_s = time.perf_counter() - t0

  video = out_dir / "demo.mp4"
  media.write_video(video, frames, fps, audio=audio, sample_rate=SAMPLE_RATE)
  media.write_image(out_dir / "contact_sheet.png", contact_sheet(frames))
  summary = {
      "what": "non-learned audio-driven keypoint warp (foundation demo)",
      "image": str(image_path), "audio": str(audio_path), "video": str(video),
      "frames": int(len(frames)), "fps": fps, "size": size,
      "render_seconds_incl_compile": round(render_s, 3),
      "frames_per_second_incl_compile": round(len(frames) / render_s, 2),
      "device": str(jax.devices()[0]),
  }
  (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--image", default=str(ASSETS / "portrait.jpg"))
  p.add_argument("--audio", default=str(ASSETS / "speech.mp3"))
  p.add_argument("--out", default="outputs/demo")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--fps", type=int, default=25)
  p.add_argument("--max-seconds", type=float, default=None)
  p.add_argument("--sway", type=float, default=1.0, help="head motion amplitude (0 = still head)")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    s = run(a.image, a.audio, a.out, size=a.size, fps=a.fps, max_seconds=a.max_seconds, sway=a.sway)
  except media.MediaError as e:
    raise SystemExit(f"error: {e}") from e
  logging.info("wrote %s (%d frames at %d fps, %dx%d); contact sheet and summary.json beside it",
               s["video"], s["frames"], s["fps"], s["size"], s["size"])
  logging.info("rendered at %.1f frames/s on %s (including compilation)",
               s["frames_per_second_incl_compile"], s["device"])


if __name__ == "__main__":
  main()
