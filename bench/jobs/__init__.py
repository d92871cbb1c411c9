"""Jobs that measure: what each of them works with (`context`: `MeasurementSetup` and
`open_setup`), one artifact with a trust verdict and retries (`measurement`), and one subnet
or many sampled subnets into a store (`profiling`).
"""
