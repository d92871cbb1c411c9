"""bfnas: find BERT architectures that are fast as deployed (INT8, on a named device).

The objects the CLI works with are importable from here for use in Python (a notebook, a
script): `from bfnas import load_profile, open_setup, ProfileJob`. docs/python-api.md
shows them at work. Each is imported on first use, not with `bfnas`: torch, onnx, onnxruntime
and LightGBM load only when something that needs them is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from bfnas.version import bfnas_version

# Read from the package metadata: setup.cfg is the one place the version is written.
__version__ = bfnas_version()

# Public name -> "module:attribute" where it lives (the module is imported on first access).
_PUBLIC = {
    # errors
    "InputError": "bfnas.errors:InputError",
    "OperationFailed": "bfnas.errors:OperationFailed",
    # what is measured: a device profile, a search space, one subnet
    "HardwareProfile": "bfnas.bench.hardware_profile:HardwareProfile",
    "load_profile": "bfnas.bench.hardware_profile:load_profile",
    "SearchSpace": "bfnas.models.space.search_space:SearchSpace",
    "load_space": "bfnas.models.space.search_space:load_space",
    "SubnetConfig": "bfnas.models.space.subnet:SubnetConfig",
    # measuring: the setup every measuring job shares, one subnet, many into a store
    "MeasurementSetup": "bfnas.bench.jobs.context:MeasurementSetup",
    "open_setup": "bfnas.bench.jobs.context:open_setup",
    "measure_subnet": "bfnas.bench.jobs.profiling:measure_subnet",
    "ProfileJob": "bfnas.bench.jobs.profiling:ProfileJob",
    "LatencyStore": "bfnas.bench.store.latency_store:LatencyStore",
    "UntilSettings": "bfnas.search.until_settings:UntilSettings",
    "UntilTrustedJob": "bfnas.search.until_trusted:UntilTrustedJob",
    # predicting and searching
    "load_rows": "bfnas.search.training:load_rows",
    "LatencyPredictor": "bfnas.search.latency_predictor:LatencyPredictor",
    "PredictorSettings": "bfnas.search.predictor_file:PredictorSettings",
    "Budget": "bfnas.search.evolution:Budget",
    "EvolutionSettings": "bfnas.search.evolution:EvolutionSettings",
    "load_objective": "bfnas.search.objectives:load_objective",
    "DeviceVerifier": "bfnas.search.loop:DeviceVerifier",
    "SearchJob": "bfnas.search.loop:SearchJob",
    # a model to ship: fine-tuned, written with its card, and run as an application runs it
    "train_task_model": "bfnas.task_model:train_task_model",
    "FinetuneSettings": "bfnas.models.train.finetune:FinetuneSettings",
    "load_classifier": "bfnas.models.deploy.text_classifier:load_classifier",
    # lottery tickets of the pre-trained BERT, measured like searched subnets
    "TicketSettings": "bfnas.tickets:TicketSettings",
    "find_tickets": "bfnas.tickets:find_tickets",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    # Called only for names not found on the module: a public one is imported, then kept
    # in the module's namespace so the next access costs nothing.
    target = _PUBLIC.get(name)
    if target is None:
        raise AttributeError(f"module 'bfnas' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
