"""Speech-to-frame latency of the stream: whole motion windows against a hop (`StreamOptions.hop`).

  python -m benchmarks.latency_bench                          # tiny presets (CPU): head and upper
  python -m benchmarks.latency_bench --checkpoint infer/assets/checkpoint --modes head
  python -m benchmarks.latency_bench --full                   # full presets, random weights (GPU)
  python -m benchmarks.latency_bench --modes head --steps 2 --seconds 2 --no-write
  python -m benchmarks.latency_bench --motion                 # seams, lips, style: bundled motion model

For each mode, the stream is run with whole windows (hop = T, look-ahead 0) and with the low-latency
setting (`infer.options.LOW_LATENCY`, or --hop / --lookahead) on the bundled portrait and speech, one
step per block of `stream_spec.step_bounds`, exactly as `infer.stream` feeds it. Per frame f, emitted by
step i (the frames [i · hop, (i + 1) · hop)), with the audio arriving in real time:

  * speech time of f: the end of the frame's own audio, sample b(f + 1) = round((f + 1) · 16000 / 30);
  * algorithmic latency: (c_{i+1} - b(f + 1)) / 16000 s, the audio the step waits for after the frame's
    own audio: the rest of the hop and the look-ahead (c_{i+1}: the last sample step i reads + 1;
    (hop + lookahead - 1) / 30 s for the hop's first frame, lookahead / 30 s for its last);
  * compute latency: the step's wall time, from its last audio sample being there (the call starts) to
    its frames on the host (the frame leaving the step); the device is assumed free when the audio is
    in, i.e. the stream keeps up (the "real time" column says whether it does: step time <= hop / 30 s;
    when it does not, a real-time stream also queues and its latency grows without bound);
  * speech-to-frame latency: the sum; median and 95th percentile over the frames of all timed steps.

A player that shows the frames at 30 fps from the first frame of a step on adds k / 30 s to the k-th
frame of the step, which evens the latency out: every frame is then shown (hop + lookahead - 1) / 30 s
plus the step's time after its own audio ("playout", the largest per-frame latency). Rows are appended
to benchmarks/RESULTS.md.

--motion compares the face motion of the two settings without rendering (`stream_step.motion_step`: the
stream's own audio blocks, keys, history and joins) on the bundled speech with a trained motion_face
(--checkpoint, default the bundled one): the seam statistic at the step boundaries (`seam_statistic` with
window = the step's frames) against the change inside steps, the mean frame-to-frame change (jitter), the
mouth opening's correlation with the speech's per-frame log energy (a proxy of lip sync: the held-out
lip-sync evaluation needs the lip-sync issue's data) and with the other setting's, and the style controls
(`style_controls` of the motion generated at amplitude and pose range x0.5 and x2).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np

from benchmarks import harness
from benchmarks import inputs as bench_inputs
from benchmarks.stream_bench import FULL, TINY, full_models
from chatanyone_jax import stream_spec, stream_step
from data.media import read_audio
from infer.options import LOW_LATENCY, StreamOptions
from infer.smoke import random_params
from infer.streaming import ASSETS_SPEECH, SAMPLE_RATE, prepare


@dataclasses.dataclass
class Latency:
  """Per-frame latencies (seconds) of one configuration, and its step times."""
  mode: str
  window: int
  hop: int
  lookahead: int
  step_s: list[float]  # wall time of each timed step
  algorithmic_s: np.ndarray  # (frames,)
  compute_s: np.ndarray  # (frames,)
  compile_s: float
  config: str = ""

  @property
  def total_s(self) -> np.ndarray:
    return self.algorithmic_s + self.compute_s

  @property
  def real_time(self) -> bool:
    return statistics.median(self.step_s) <= self.hop / stream_spec.FPS

  @property
  def playout_s(self) -> float:
    """Latency of every frame when a player shows them at 30 fps: (hop + L - 1) / 30 + the median step."""
    return (self.hop + self.lookahead - 1) / stream_spec.FPS + statistics.median(self.step_s)

  def summary(self) -> dict[str, float]:
    q = lambda x, p: float(np.quantile(x, p))
    return {"algorithmic_median_s": q(self.algorithmic_s, 0.5),
            "algorithmic_p95_s": q(self.algorithmic_s, 0.95),
            "algorithmic_max_s": float(self.algorithmic_s.max()),
            "compute_median_s": q(self.compute_s, 0.5), "compute_p95_s": q(self.compute_s, 0.95),
            "total_median_s": q(self.total_s, 0.5), "total_p95_s": q(self.total_s, 0.95),
            "playout_s": self.playout_s}


def frame_latencies(spec: stream_spec.StreamSpec, steps: Sequence[int],
                    step_s: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """(algorithmic, compute) seconds of every frame of the given steps (module docstring)."""
  hop = spec.step_frames
  alg, comp = [], []
  for i, s in zip(steps, step_s, strict=True):
    c1 = stream_spec.step_bounds(i, spec)[1]
    for f in range(i * hop, (i + 1) * hop):
      alg.append((c1 - stream_spec.frame_sample(f + 1, spec.spf)) / SAMPLE_RATE)
      comp.append(s)
  return np.asarray(alg), np.asarray(comp)


def measure(mode: str, options: StreamOptions, *, full: bool = False, checkpoint: str | None = None,
            seconds: float = 4.0, inputs: str | None = None) -> Latency:
  """Runs `seconds` of the bundled speech through the step (after one untimed compile step) and times it.

  `inputs`: the `benchmarks.inputs` file to take the portrait and speech from (default: the bundled ones).
  """
  portrait, audio = bench_inputs.load(inputs)
  if checkpoint is not None:
    session = prepare(portrait, checkpoint=checkpoint, options=options)
    models = f"checkpoint {checkpoint}"
  else:
    params, configs = (full_models if full else random_params)(mode, refine=options.refine)
    session = prepare(portrait, options=options, params=params, configs=configs)
    presets = FULL if full else TINY
    models = f"{presets[mode]}{' + ' + presets['refine'] if session.spec.refine else ''}, random weights"
  spec, params, state = session.spec, session.params, session.state
  step = stream_step.make_stream_step(spec)
  size = stream_spec.block_samples(spec)
  num = max(2, round(seconds * stream_spec.FPS / spec.step_frames)) + 1
  fits = 0  # steps whose audio the speech holds: long windows of a trained model fit fewer in 4.9 s
  while stream_spec.step_bounds(fits, spec)[1] <= audio.size:
    fits += 1
  if fits < 3:
    raise ValueError(f"the speech ({audio.size / SAMPLE_RATE:.1f} s) holds {fits} steps of "
                     f"{spec.step_frames} frames; one compile step and two timed ones need longer speech")
  if num > fits:
    logging.warning("%s: timing %d steps, all the speech holds (asked for %d)", mode, fits - 1, num - 1)
    num = fits
  times, compile_s = [], 0.0
  for i in range(num):
    c0, c1 = stream_spec.step_bounds(i, spec)
    buf = np.zeros(size, np.float32)
    buf[:c1 - c0] = audio[c0:c1]
    t0 = time.perf_counter()
    state, frames = step(params, state, buf)
    np.asarray(frames)  # the frames on the host: they have left the step
    if i == 0:
      compile_s = time.perf_counter() - t0
    else:
      times.append(time.perf_counter() - t0)
  alg, comp = frame_latencies(spec, range(1, num), times)
  h, w = spec.output_size
  config = (f"{mode}, {models}, {spec.num_steps} DDIM steps, T={spec.window}, hop={spec.step_frames}, "
            f"look-ahead={spec.lookahead}, {w}x{h} out, renderer {spec.render_dtype}")
  return Latency(mode, spec.window, spec.step_frames, spec.lookahead, times, alg, comp, compile_s, config)


def _energy(audio: np.ndarray, frames: int) -> np.ndarray:
  """(frames,) log mean square of each video frame's audio samples [b(f), b(f + 1))."""
  spf = stream_spec.SAMPLE_RATE / stream_spec.FPS
  edges = np.round(np.arange(frames + 1) * spf).astype(int)
  return np.asarray([np.log(np.mean(audio[a:b] ** 2) + 1e-8) for a, b in zip(edges, edges[1:], strict=False)])


def motion_quality(checkpoint: str | None = None, *, hop: int = LOW_LATENCY["hop"],
                   lookahead: int = LOW_LATENCY["lookahead"], seconds: float = 12.0,
                   seed: int = 0, speech: str | None = None,
                   seam_frames: int | None = None) -> dict[str, dict]:
  """Seams, jitter, lips and style of the stream's face motion, whole windows vs hop (module docstring);
  seam_frames: the hop's joins (None: LOW_LATENCY's)."""
  import jax.numpy as jnp

  from chatanyone_jax.motion.face_motion_dit import style_controls
  from chatanyone_jax.motion.sampling import seam_statistic
  from chatanyone_jax.template import head_template as tp
  from chatanyone_jax.template import load_head_template
  from infer.avatar import default_style
  from infer.models import build_spec, default_checkpoint, load_checkpoint

  checkpoint = checkpoint or default_checkpoint()
  params, configs = load_checkpoint(checkpoint, "head", False)
  audio = read_audio(speech or ASSETS_SPEECH, SAMPLE_RATE)
  seconds = min(seconds, audio.size / SAMPLE_RATE)
  template = load_head_template()
  out = {}
  hop_options = {"hop": hop, "lookahead": lookahead,
                 "seam_frames": LOW_LATENCY["seam_frames"] if seam_frames is None else seam_frames}
  for name, latency in (("whole", {}), ("hop", hop_options)):
    spec = build_spec(configs, StreamOptions(mode="head", seed=seed, **latency))
    pf = params["motion_face"]
    motion_params = {k: params[k] for k in ("motion_face", "motion_lip") if k in params}
    ref = None
    if "ref_proj" in pf["params"]["face"]:
      ref = jnp.zeros((1, spec.window, spec.face.config.ref_dim), jnp.float32)
    step = jax.jit(lambda p, st, b, spec=spec: stream_step.motion_step(spec, p, st, b), donate_argnums=1)
    unit = math.lcm(spec.window, hop)  # both settings cover the same frames, the audio all of their steps
    num = (int(seconds * stream_spec.FPS) - lookahead) // unit * unit // spec.step_frames
    runs = {}
    for scale in (1.0, 0.5, 2.0):
      state = stream_step.init_motion_state(spec, default_style(spec.window) * scale, jax.random.key(seed),
                                            ref, reference_valid=False)
      if spec.lip is not None:  # the lip regressor's mouth scales with the amplitude too, as in the stream
        state["lip_gain"] = jnp.full((1,), scale, jnp.float32)
      chunks = []
      for block in stream_spec.step_blocks(audio, spec, num):
        state, m = step(motion_params, state, block)
        chunks.append(np.asarray(m[0]))
      runs[scale] = np.concatenate(chunks)[None]  # (1, N, 58) normalised
    motion = runs[1.0]
    boundary, inside = seam_statistic(jnp.asarray(motion), spec.step_frames)
    raw = motion[0] * np.asarray(pf["norm"]["motion_std"]) + np.asarray(pf["norm"]["motion_mean"])
    opening = np.asarray(tp.mouth_opening(template, jnp.asarray(raw[:, :tp.NUM_EXP])))
    energy = _energy(audio, len(opening))
    style = {k: np.asarray(style_controls(jnp.asarray(v)))[0].tolist() for k, v in runs.items()}
    out[name] = {"hop": spec.step_frames, "lookahead": spec.lookahead, "seam_frames": spec.seam_frames,
                 "frames": motion.shape[1],
                 "seam_boundary": float(boundary), "seam_inside": float(inside),
                 "jitter": float(np.abs(np.diff(motion[0], axis=0)).mean()),
                 "opening_energy_corr": float(np.corrcoef(opening, energy)[0, 1]),
                 "opening": opening, "style_x0.5": style[0.5], "style_x1": style[1.0], "style_x2": style[2.0]}
  a, b = out["whole"].pop("opening"), out["hop"].pop("opening")
  out["hop"]["opening_corr_with_whole"] = float(np.corrcoef(a, b)[0, 1])
  return out


def table(results: Sequence[Latency]) -> str:
  head = ("| mode | T | hop | look-ahead | step ms | real time | algorithmic ms median / p95 / max "
          "| compute ms median / p95 | speech-to-frame ms median / p95 | playout ms |")
  rows = [head, "|" + "---|" * 10]
  for r in results:
    s = {k: 1e3 * v for k, v in r.summary().items()}
    step_ms = 1e3 * statistics.median(r.step_s)
    rows.append(f"| {r.mode} | {r.window} | {r.hop} | {r.lookahead} | {step_ms:.1f} "
                f"| {'yes' if r.real_time else 'no'} | {s['algorithmic_median_s']:.0f} / "
                f"{s['algorithmic_p95_s']:.0f} / {s['algorithmic_max_s']:.0f} "
                f"| {s['compute_median_s']:.0f} / {s['compute_p95_s']:.0f} "
                f"| {s['total_median_s']:.0f} / {s['total_p95_s']:.0f} "
                f"| {s['playout_s']:.0f} |")
  return "\n".join(rows)


def run(*, modes: Sequence[str] = ("head", "upper"), hop: int = LOW_LATENCY["hop"],
        lookahead: int = LOW_LATENCY["lookahead"], steps: int | None = None, full: bool = False,
        checkpoint: str | None = None, seconds: float = 4.0, dtype: str = "float32",
        write: bool = True, inputs: str | None = None) -> list[Latency]:
  results = []
  for mode in modes:
    base = StreamOptions(mode=mode, render_dtype=dtype, **({"num_steps": steps} if steps else {}))
    for options in (base, dataclasses.replace(base, hop=hop, lookahead=lookahead,
                                              seam_frames=LOW_LATENCY["seam_frames"])):
      r = measure(mode, options, full=full, checkpoint=checkpoint, seconds=seconds, inputs=inputs)
      logging.info("%s: %s", r.config, {k: round(v, 3) for k, v in r.summary().items()})
      results.append(r)
      if write:  # row by row: a run cut short (gpu.sh's time limit) keeps what it measured
        s = r.summary()
        t = harness.Timing("stream latency", r.config, r.compile_s, r.step_s)
        t.throughput = (f"speech-to-frame {1e3 * s['total_median_s']:.0f} ms median / "
                        f"{1e3 * s['total_p95_s']:.0f} ms p95 "
                        f"(algorithmic {1e3 * s['algorithmic_median_s']:.0f} / "
                        f"{1e3 * s['algorithmic_p95_s']:.0f}, compute {1e3 * s['compute_median_s']:.0f} / "
                        f"{1e3 * s['compute_p95_s']:.0f}); {'keeps' if r.real_time else 'below'} real time")
        harness.append_rows([t])
  return results


def main(argv: Sequence[str] | None = None) -> list[Latency]:
  p = argparse.ArgumentParser(prog="python -m benchmarks.latency_bench", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--modes", nargs="+", choices=("head", "upper"), default=["head", "upper"])
  p.add_argument("--hop", type=int, default=LOW_LATENCY["hop"], help="frames per step of the low-latency run")
  p.add_argument("--lookahead", type=int, default=LOW_LATENCY["lookahead"], help="frames of audio look-ahead")
  p.add_argument("--steps", type=int, help="DDIM steps (default: StreamOptions')")
  p.add_argument("--seconds", type=float, help="timed speech per configuration (default 4; --motion: 12)")
  p.add_argument("--checkpoint",
                 help="trained workdirs (e.g. infer/assets/checkpoint) instead of random tiny networks")
  p.add_argument("--full", action="store_true", help="full presets and motion configs, random weights (GPU)")
  p.add_argument("--bf16", action="store_true", help="renderer networks in bfloat16")
  p.add_argument("--no-write", action="store_true", help="do not append rows to benchmarks/RESULTS.md")
  p.add_argument("--inputs", metavar="NPZ", help="annotated portrait and decoded speech from this file "
                 "(`python -m benchmarks.gpu_wheels`), for a machine without MediaPipe or PyAV")
  p.add_argument("--seed", type=int, default=0, help="--motion: the streams' seed")
  p.add_argument("--speech", help="--motion: speech file (default: the bundled speech)")
  p.add_argument("--seam-frames", type=int, help="--motion: the hop's joins (default: LOW_LATENCY's)")
  p.add_argument("--motion", action="store_true",
                 help="instead: seams, jitter, lips and style of a trained motion_face, whole windows vs hop")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("infer.models").setLevel(logging.WARNING)
  if a.motion:
    out = motion_quality(a.checkpoint, hop=a.hop, lookahead=a.lookahead, seconds=a.seconds or 12.0,
                         speech=a.speech, seed=a.seed, seam_frames=a.seam_frames)
    print(f"\nface motion of the stream on {harness.device_name()}\n")
    for name, d in out.items():
      print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()})
    return []
  results = run(modes=a.modes, hop=a.hop, lookahead=a.lookahead, steps=a.steps, full=a.full,
                checkpoint=a.checkpoint, seconds=a.seconds or 4.0, dtype="bfloat16" if a.bf16 else "float32",
                write=not a.no_write, inputs=a.inputs)
  print(f"\nspeech-to-frame latency on {harness.device_name()}\n")
  print(table(results))
  return results


if __name__ == "__main__":
  main()
