"""The power-system layer: grids, AC physics, AC-OPF, power flow and load flow, datasets, measurements, WLS state
estimation, PMU data and corruptions.

It knows nothing of diffusion models: everything here is per unit, radians, and the grid's bus order
(see :mod:`pfbook.power.grids`).
"""
