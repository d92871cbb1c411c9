"""Jobs that measure: one artifact with a trust verdict and retries (`measurement`) and many
sampled subnets into a store (`profiling`).
"""
