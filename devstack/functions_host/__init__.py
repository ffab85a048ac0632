"""Stand-ins for the Azure Functions host where `func` cannot run, side by side.

`invoker` calls one function with the binding objects the host would pass; `polling` is the
long-running host around it (`python -m devstack.functions_host`); `local_settings` writes the
local.settings.json both read.
"""
