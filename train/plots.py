"""Small PIL line plots for TensorBoard images (no matplotlib dependency)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"ground truth": (20, 20, 20), "sample": (220, 40, 40)}


def curves_image(panels: dict[str, dict[str, np.ndarray]], width: int = 480, panel_height: int = 110
                 ) -> np.ndarray:
  """One panel per entry of `panels` ({title: {series name: (T,) values}}), stacked vertically.

  Each panel is scaled to the range of its series; series named in COLOURS get those colours (others
  cycle). Returns (H, W, 3) float32 in [0, 1].
  """
  extra = [(40, 110, 220), (30, 160, 60), (150, 60, 200)]
  img = Image.new("RGB", (width, panel_height * len(panels)), "white")
  draw = ImageDraw.Draw(img)
  margin_x, margin_top, margin_bottom = 8, 16, 6
  for row, (title, series) in enumerate(panels.items()):
    y0 = row * panel_height
    values = np.concatenate([np.asarray(v, np.float64).ravel() for v in series.values()])
    lo, hi = float(np.min(values)), float(np.max(values))
    span = hi - lo if hi > lo else 1.0
    draw.rectangle([0, y0, width - 1, y0 + panel_height - 1], outline=(200, 200, 200))
    legend = ", ".join(series)
    draw.text((margin_x, y0 + 2), f"{title}  [{lo:.3g}, {hi:.3g}]  {legend}", fill=(0, 0, 0))
    plot_h = panel_height - margin_top - margin_bottom
    for i, (name, v) in enumerate(series.items()):
      v = np.asarray(v, np.float64).ravel()
      if v.size < 2:
        continue
      xs = margin_x + np.arange(v.size) * (width - 2 * margin_x) / (v.size - 1)
      ys = y0 + margin_top + (1.0 - (v - lo) / span) * plot_h
      colour = COLOURS.get(name, extra[i % len(extra)])
      draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
  return np.asarray(img, np.float32) / 255.0
