"""Queueing TrainableJobs through Kueue (only with --kueue): the API Kueue
serves (here, for the one module that talks to the API and for the watches),
the pure rules of a queued job's Workload (gate.py), and the Workload I/O
after each reconcile (workloads.py).
"""

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
WORKLOADS = "workloads"
RESOURCE_FLAVORS = "resourceflavors"
PRIORITY_CLASSES = "workloadpriorityclasses"
