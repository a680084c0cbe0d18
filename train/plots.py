"""Small PIL line plots for TensorBoard images and learning curves (no matplotlib dependency).

  python -m train.plots --workdir W --out curve.png   # a run's learning curve from W/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"ground truth": (20, 20, 20), "sample": (220, 40, 40)}


def curves_image(panels: dict[str, dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]]], width: int = 480,
                 panel_height: int = 110) -> np.ndarray:
  """One panel per entry of `panels` ({title: {series name: (T,) values, or (x, y) arrays}}), stacked.

  Each panel is scaled to the range of its series (x: the index, or the given x values); series named in
  COLOURS get those colours (others cycle). Returns (H, W, 3) float32 in [0, 1].
  """
  extra = [(40, 110, 220), (30, 160, 60), (150, 60, 200)]
  img = Image.new("RGB", (width, panel_height * len(panels)), "white")
  draw = ImageDraw.Draw(img)
  margin_x, margin_top, margin_bottom = 8, 16, 6
  for row, (title, series) in enumerate(panels.items()):
    y0 = row * panel_height
    series = {k: v if isinstance(v, tuple) else (np.arange(np.size(v)), v) for k, v in series.items()}
    series = {k: (np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel())
              for k, (x, y) in series.items()}
    values = np.concatenate([y for _, y in series.values()])
    x_all = np.concatenate([x for x, _ in series.values()])
    x_lo, x_span = float(x_all.min()), max(float(x_all.max() - x_all.min()), 1.0)
    lo, hi = float(np.min(values)), float(np.max(values))
    span = hi - lo if hi > lo else 1.0
    draw.rectangle([0, y0, width - 1, y0 + panel_height - 1], outline=(200, 200, 200))
    legend = ", ".join(series)
    draw.text((margin_x, y0 + 2), f"{title}  [{lo:.3g}, {hi:.3g}]  {legend}", fill=(0, 0, 0))
    plot_h = panel_height - margin_top - margin_bottom
    for i, (name, (x, v)) in enumerate(series.items()):
      xs = margin_x + (x - x_lo) * (width - 2 * margin_x) / x_span
      ys = y0 + margin_top + (1.0 - (v - lo) / span) * plot_h
      colour = COLOURS.get(name, extra[i % len(extra)])
      points = list(zip(xs.tolist(), ys.tolist(), strict=True))
      if v.size >= 2:
        draw.line(points, fill=colour, width=2)
      if v.size < 8:  # a sparse series (evaluations): mark its points
        for px, py in points:
          draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
  return np.asarray(img, np.float32) / 255.0


def learning_curve(rows: Sequence[dict], width: int = 640) -> np.ndarray:
  """A renderer run's curve from its metrics.jsonl rows: training L1 and, where evals ran, the held-out
  L1 and PSNR of the EMA generator against copy-the-source, one panel per metric and split."""
  train = [(r["step"], r["l1"]) for r in rows if "l1" in r]
  panels: dict[str, dict] = {}
  if train:
    panels["train L1 (batch mean)"] = {"train": tuple(np.array(train).T)}
  splits = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("eval/")})
  for split in splits:
    for metric in ("l1", "psnr"):
      key, base = f"eval/{split}/{metric}", f"eval/{split}/copy_source_{metric}"
      pts = np.array([(r["step"], r[key], r[base]) for r in rows if key in r])
      if pts.size:
        panels[f"{split} {metric.upper()}"] = {"EMA generator": (pts[:, 0], pts[:, 1]),
                                               "copy source": (pts[:, 0], pts[:, 2])}
  if not panels:
    raise ValueError("no l1 or eval/* metrics in these rows: not a renderer run's metrics.jsonl")
  return curves_image(panels, width=width)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m train.plots", description="A renderer run's learning curve.")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True, help="PNG file")
  args = p.parse_args(argv)
  path = pathlib.Path(args.workdir) / "metrics.jsonl"
  if not path.is_file():
    raise SystemExit(f"error: {path} does not exist (is {args.workdir} a training workdir?)")
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  image = learning_curve(rows)
  os.makedirs(pathlib.Path(args.out).parent, exist_ok=True)
  Image.fromarray((image * 255 + 0.5).astype(np.uint8)).save(args.out)
  print(f"{args.out}: {len(rows)} rows, last step {rows[-1]['step']}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
