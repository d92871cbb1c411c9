"""Measuring subnets on devices and keeping every number with its provenance.

- `hardware_profile.py`: `HardwareProfile`, one device and how to measure on it (TOML).
- `device/`: what runs on the device: the worker and its fork server, the timing loop and its
  statistics, the environment, GPU and usability probes, and the backends (`backends/`).
- `runners/`: where a job runs (local, SSH, Ray), behind one interface (`base.Runner`); the
  kinds a profile's `target.kind` may name are registered in `runners/registry.py`, the
  backends in `device/backends/__init__.py` (`device/lazy_import.py` loads their entries).
- `store/`: the SQLite `LatencyStore` and `AccuracyStore` (fine-tune results), the guarded file
  both are, and the importer of latency tables measured elsewhere.
- `jobs/`: profiling many subnets into a store and measuring one with a trust verdict.

Depends on `bfnas.models`, never on `bfnas.search`. Nothing under `device/` imports torch.
"""
