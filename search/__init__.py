"""Hardware-aware search: subnet features (`features`), the LightGBM `LatencyPredictor`
(`latency_predictor`, built on the generic `estimator`, with its priors in `latency_priors`
and its folder format in `predictor_file`) and its training rows from a store (`training`),
the `AccuracyPredictor` on the same estimator (`accuracy_predictor`) and fine-tuning until
it ranks well enough (`accuracy_until`), objectives, the evolutionary search (`evolution`)
and the search job with device verification (`loop`), reports and plots.

Depends on `bfnas.bench` and `bfnas.models`.
"""
