"""The benchmark runner behind ``maxsim-bench`` (installed as ``maxsim.bench`` from the repo's bench/)."""
