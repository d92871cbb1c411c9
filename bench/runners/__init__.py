"""Where a measurement job runs: this machine (`local`), a device over SSH (`ssh`), or the
device nodes of a Ray cluster (`ray`). All are a `base.Runner`; `registry` is where each
kind is registered (a new kind: its module, plus one entry there); `base.runner_for` builds
a profile's runner from it, and `usable` checks a profile where that runner measures before
any job writes anything.
"""
