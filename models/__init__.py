"""Search space, subnet configs, BERT and the elastic supernet, export and INT8 quantization.

Knows nothing of devices or search. Heavy modules (torch, onnx) are imported by their
submodules only, so `bfnas.models.space` stays cheap to import.
"""

from bfnas.models.errors import InputError
from bfnas.models.space import SearchSpace, load_space, shipped_spaces
from bfnas.models.subnet import SubnetConfig

__all__ = ["InputError", "SearchSpace", "SubnetConfig", "load_space", "shipped_spaces"]
