"""What runs on the measured device: `worker` (one measurement per process), `forkserver`
(forks workers without start-up cost), `timing` (the one timing loop), `stats`,
`environment` (machine, load and versions), `gpu` and `probe` (is a profile usable here?), and
the inference `backends`. Nothing here imports torch or onnx: a device needs only
ONNX Runtime (or TensorRT) and numpy.
"""
