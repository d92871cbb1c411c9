"""TensorRT: engines built from the QDQ ONNX artifacts and timed with CUDA events through
pycuda (`harness`, what the backend registry names). One job per module:

- `qdq_check`: can the graph build as an explicitly quantized network (`check_trt_qdq`)?
- `build_plan`: what to build for a precision and a TensorRT version, and the shapes.
- `keys`: the device, the builder settings and the cache keys they make.
- `build`: building the engine (or taking it from the cache), step by step.
- `inspector`: which precision each layer of a built engine runs in.
- `float_twin`: the float network of a QDQ graph, for the FP16 baseline.

Imports TensorRT and pycuda only when an engine is built or timed, so the rest of bfnas
works without them; everything but `build` and `harness` is pure and tested on CPU.
"""
