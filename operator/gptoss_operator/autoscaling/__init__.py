"""Autoscaling on what an LLM server feels, capped by the GPUs the cluster really has.

- `signals`: parse one pod's Prometheus text into `ReplicaSignals` (pure).
- `scrape`: fetch that text from a pod (the package's only I/O).
- `policy`: the decision function, `decide(...) -> Decision` (pure; time is an input).
- `capacity`: free GPUs that match the deployment, replicas that fit, the cap (pure).
- `config`: the spec's `autoscaling` section as the policy's `PolicyConfig` (pure).

The walls of the house apply: everything but `scrape` is pure: no kopf, no Kubernetes client, no clock,
no environment.
"""

from __future__ import annotations
