"""linegate core: config model, sample types, bus, numba pipeline, runtime.

Imports no network library and no `drivers` module, except in `gateway.composition`.
"""
