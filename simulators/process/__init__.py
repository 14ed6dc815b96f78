"""Process sub-models of the simulated line; `simulators.plant.Plant` wires them together."""
