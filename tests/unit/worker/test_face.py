"""`import kubetune as tune`: every public name resolves, from the module that
defines it, and importing the package (or its storage layer, as the operator
does) loads none of the runtime until a name is used."""

from __future__ import annotations

import subprocess
import sys

import kubetune


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in kubetune.__all__:
        assert getattr(kubetune, name) is not None, name
    assert set(kubetune.__all__) <= set(dir(kubetune))
    assert kubetune.schedulers.ASHAScheduler().to_spec()["type"] == "asha"


def test_a_name_that_does_not_exist_is_an_attribute_error() -> None:
    try:
        kubetune.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "no attribute 'NoSuchThing'" in str(exc)
    else:
        raise AssertionError("kubetune.NoSuchThing resolved")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


HEAVY = {"cloudpickle", "psutil", "kubernetes", "kubetune.runtime", "kubetune.client"}


def test_the_operators_import_of_storage_loads_no_runtime() -> None:
    loaded = loaded_after("import kubetune_operator.storageio")
    assert not loaded & HEAVY
    assert not {m for m in loaded if m.startswith(("kubetune.sdk.", "kubetune.runtime."))} - {
        "kubetune.sdk.version"
    }


def test_a_local_run_loads_the_runtime_but_not_the_kubernetes_client() -> None:
    loaded = loaded_after("import kubetune as tune; tune.run")
    assert "kubetune.runtime.loop" in loaded
    assert not loaded & {"kubernetes", "kubetune.client"}
