"""Autoscaling on what an LLM server feels, capped by the GPUs the cluster really has.

- `signals`: parse one pod's Prometheus text into `ReplicaSignals` (pure).
- `scrape`: fetch that text from a pod (the package's only I/O).
- `policy`: the decision function, `decide(...) -> Decision` (pure; time is an input).
- `capacity`: free GPUs that match the deployment, replicas that fit, the cap (pure).

The walls of the house apply: `signals`, `policy` and `capacity` import neither kopf nor the Kubernetes
client and read neither clocks nor the environment.
"""

from __future__ import annotations
