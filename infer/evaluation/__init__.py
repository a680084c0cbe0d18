"""The paper's evaluation tables, run by `python -m infer.evaluate` (whose module is the public surface).

`backends`: the metric networks and where their weight files are found; `scoring`: what the tables share
(records, FID / FVD features, CSIM); one module per table: `self_reenactment` (Table 1), `audio_driven`
(Table 3), `style_transfer` (Table 4); `report`: the Markdown and JSON outputs.
"""
