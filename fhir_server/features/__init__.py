"""Feature wiring: each module installs one feature's hooks, operations and capabilities."""
