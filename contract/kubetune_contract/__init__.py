"""The contract the worker, the operator, the client and the tools all speak:
the API's group, version, kinds and labels (`api`); exit codes (`exit_codes`);
the run folder's names (`run_folder`); how the operator hands a job to a
worker pod and how the worker pushes its progress back (`worker_env`); and the
one progress document type (`progress`). Every name of those modules is here
too, as `kubetune_contract.NAME`.

Standard library only, so the operator (and anything else) can use it without
the SDK's runtime; nothing else in the project redefines what is here."""

from kubetune_contract import api, exit_codes, progress, run_folder, worker_env
from kubetune_contract.api import *  # noqa: F403
from kubetune_contract.exit_codes import *  # noqa: F403
from kubetune_contract.progress import *  # noqa: F403
from kubetune_contract.run_folder import *  # noqa: F403
from kubetune_contract.worker_env import *  # noqa: F403

__all__ = [
    *api.__all__,
    *exit_codes.__all__,
    *progress.__all__,
    *run_folder.__all__,
    *worker_env.__all__,
]
