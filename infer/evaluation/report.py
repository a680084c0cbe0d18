"""The evaluation report: the tables as Markdown (`to_markdown`) and OUT/eval.json + OUT/eval.md.

A report is {"checkpoint", "data", "split", "tables": {"table1" | "table3" | "table4": {"rows": {row:
{column: value}}, ...}}, "missing_weights", ...}; values are floats, None or "n/a (...)" strings.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

TABLE_COLUMNS = {
    "table1": ("PSNR", "SSIM", "LPIPS", "FID", "FVD", "CSIM", "MouthCorr", "MouthScale", "HKC", "FPS"),
    "table3": ("FID", "CSIM", "Sync", "Diversity", "LMD", "MouthCorr", "VideoMouthCorr",
               "VideoMouthScale"),
    "table4": ("MAE", "SSIM"),
}
TABLE_TITLES = {
    "table1": "Table 1: self-driven reenactment",
    "table3": "Table 3: audio-driven",
    "table4": "Table 4: style transfer (face coefficients)",
}


def _fmt(v, digits: int = 3) -> str:
  if v is None:
    return "n/a"
  if isinstance(v, str):
    return v
  if isinstance(v, float) and not np.isfinite(v):
    return "inf" if v > 0 else "n/a"
  return f"{v:.{digits}f}"


def to_markdown(report: dict) -> str:
  """One Markdown table per table of the report, its other entries listed below it."""
  lines = [f"# Evaluation of {report['checkpoint']} on {report['data']} ({report['split']} split)", ""]
  for key in ("table1", "table3", "table4"):
    if key not in report["tables"]:
      continue
    table = report["tables"][key]
    cols = TABLE_COLUMNS[key]
    lines += [f"## {TABLE_TITLES[key]}", "", "| | " + " | ".join(cols) + " |",
              "|---|" + "---|" * len(cols)]
    for name, row in table["rows"].items():
      cells = []
      for col in cols:
        v = row.get(col, "")
        if col == "FPS" and "resolution" in row and v != "":
          cells.append(f"{_fmt(v, 1)} ({row['resolution']})")
        elif col in row:
          cells.append(_fmt(v, 2 if col in ("PSNR", "FID", "FVD", "LMD") else 3))
        else:
          cells.append("")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extra = {k: v for k, v in table.items() if k not in ("rows",)}
    show = lambda v: ", ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict) else v
    lines += [""] + [f"- {k}: {show(v)}" for k, v in extra.items()] + [""]
  if report.get("missing_weights"):
    lines += ["Metrics without weights: " + "; ".join(f"{k} ({v})" for k, v in
                                                       report["missing_weights"].items()), ""]
  return "\n".join(lines)


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def write_report(report: dict, out: str | os.PathLike) -> None:
  """OUT/eval.json (NaN as null) and OUT/eval.md (`to_markdown`)."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "eval.json").write_text(json.dumps(_jsonable(report), indent=1))
  (out / "eval.md").write_text(to_markdown(report))
