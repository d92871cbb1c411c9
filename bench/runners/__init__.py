"""Where a measurement job runs: this machine (`local`), a device over SSH (`ssh`), or the
device nodes of a Ray cluster (`ray`). All are a `base.Runner`; `usable` checks a profile
where its runner measures before any job writes anything.
"""
