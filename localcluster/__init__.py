"""A real local Kubernetes cluster (etcd, kube-apiserver, controller-manager,
scheduler, an S3 server and a node agent running pods as local processes) for
the end-to-end tests and the demo, built from upstream sources.

The control plane is at this level (cluster.py: up, down, status), the node
agent in nodeagent/, the optional add-ons (kwok, Kueue) in addons/."""
