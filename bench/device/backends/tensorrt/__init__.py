"""TensorRT: engines built from the QDQ ONNX artifacts (`engine`) and timed with CUDA events
through pycuda (`harness`). Imports TensorRT and pycuda only when an engine is built or
timed, so the rest of bfnas works without them.
"""
