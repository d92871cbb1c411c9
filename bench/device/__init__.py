"""What runs on the measured device: `worker` (one measurement per process), `forkserver`
(forks workers without start-up cost), `timing` (the one timing loop), `stats`, `memory`,
`environment` (machine, load and versions), `gpu` and `probe` (is a profile usable here?),
`contract` (what a worker reports), `settings` (a resolved profile as the device reads it),
and the inference `backends`; `python -m bfnas.bench.device COMMAND` runs them.

The host ships this package to devices as a zip (`bench.runners.device_code`), so it imports
nothing but itself, the standard library, numpy and the runtime (ONNX Runtime, or TensorRT,
pycuda and onnx), and runs on Python 3.8 or newer (tests/test_layering.py and
tests/test_device_code.py hold it to both).
"""
