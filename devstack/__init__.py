"""The local stack: the real services the tests, the demo and the benchmarks start, by job.

    supervision/      child processes: start with a log, wait for health, stop the group; /proc readings
    services/         Prefect server, Azurite, the webhook gateway, PostgreSQL and Redis as child processes
    functions_host/   the Functions host stand-ins: one invocation (invoker), the polling host, local settings
    prefect_queries/  what reached Prefect (events), and the pipeline's events as the webhooks make them
    flow_server, flow_runs, work_pool, scale_stack   the flow's serving (issue 11 moves them)

One way to choose a port, wait for health and stop a process tree, whoever starts the service.
"""
