"""Prefect Cloud-compatible webhooks: the templates, a gateway for self-hosted Prefect, Cloud provisioning.

`python -m webhooks serve` runs the gateway; `python -m webhooks provision` creates the same
webhooks in Prefect Cloud (or, with `--local`, points the senders at the gateway).
"""
