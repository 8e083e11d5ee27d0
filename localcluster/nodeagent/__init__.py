"""The node agent, our stand-in for the kubelet: it serves the cluster's nodes
and runs their pods as local processes. `python -m localcluster.nodeagent`
starts it (agent.py); the rules it follows are pure functions (node.py,
env.py, status.py), kept apart from its I/O (pods.py, containers.py,
volumes.py, logs.py, kube.py) and from the container launcher (launcher.py)."""
