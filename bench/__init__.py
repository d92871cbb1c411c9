"""Measuring subnets on devices: harnesses, workers, statistics (and, later, profiles and the store).

Depends on `bfnas.models`, never on `bfnas.search`.
"""
