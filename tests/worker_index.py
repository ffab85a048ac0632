"""Index function_app.py with the Python language worker's own indexer and print what it sends the host.

Runs under Python >= 3.13 with `azure-functions-runtime` (the worker the host starts for 3.13+):
    .venv-py313/bin/python tests/worker_index.py /path/to/app_dir
Prints one JSON object: each function's name, raw bindings (the JSON the host receives) and the
parameter types the worker resolved. A binding the worker rejects exits non-zero with its message.

The gRPC message classes the indexer fills (generated from FunctionRpc.proto, shipped with the
host's proxy worker, not on PyPI) are replaced by plain records; every check is the worker's own.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace


class BindingInfo(SimpleNamespace):
    """FunctionRpc.proto's BindingInfo: the enum values the indexer compares against, and a record."""

    out = 1
    inout = 2
    undefined = 0


setattr(BindingInfo, "in", 0)

PROTOS = SimpleNamespace(
    BindingInfo=BindingInfo, RpcFunctionMetadata=SimpleNamespace, RpcRetryOptions=SimpleNamespace
)


def main(app_dir: str) -> None:
    sys.path.insert(0, app_dir)  # as the language worker does: the app's folder is its import root
    from azure_functions_runtime.bindings.meta import load_binding_registry
    from azure_functions_runtime.functions import Registry
    from azure_functions_runtime.loader import index_function_app, process_indexed_function

    load_binding_registry()
    indexed = index_function_app(f"{app_dir}/function_app.py")
    registry = Registry()
    metadata, _ = process_indexed_function(PROTOS, registry, indexed, app_dir)
    functions = []
    for function in metadata:
        info = registry.get_function(function.function_id)
        functions.append(
            {
                "name": function.name,
                "raw_bindings": [json.loads(raw) for raw in function.raw_bindings],
                "deferred_bindings": info.deferred_bindings_enabled,
                "inputs": {
                    name: t.pytype.__module__ + "." + t.pytype.__qualname__
                    for name, t in info.input_types.items()
                },
                "outputs": {name: repr(t.pytype) for name, t in info.output_types.items()},
            }
        )
    print(json.dumps({"functions": functions}))


if __name__ == "__main__":
    main(sys.argv[1])
