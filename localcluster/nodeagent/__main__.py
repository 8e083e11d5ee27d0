"""`python -m localcluster.nodeagent ...`: how `up` (components.nodeagent_argv)
and the chaos tests' extra nodes (faults.LoseableNode) start a node agent."""

import sys

from localcluster.nodeagent.agent import main

if __name__ == "__main__":
    sys.exit(main())
