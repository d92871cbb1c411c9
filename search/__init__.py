"""Hardware-aware search: features, the latency predictor, objectives, evolution.

Depends on `bfnas.bench` and `bfnas.models`. So far: `features` (subnet features, built
column-wise), `predictor` (`LatencyPredictor`: LightGBM on a ratio to an analytic estimate,
out-of-fold spread, text-file save), `training` (rows from a `LatencyStore`, CV) and
`plots`.
"""
