"""Command line: `python -m webhooks serve` runs the gateway, `python -m webhooks provision` sets up the URLs.

python -m webhooks serve [--host 127.0.0.1] [--port 4280] [--data-dir DIR] ...
python -m webhooks provision            # create/update the webhooks in Prefect Cloud
python -m webhooks provision --local    # point the senders at the gateway instead
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import logging
import os
import sys
from pathlib import Path

from configuration import REPO_ROOT
from configuration.declared import Flag, add_flags, positive
from webhooks.catalog import DEFAULT_CONFIG, ConfigError, load_catalog

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 4280
# A per-user state folder (XDG): the same queue whichever folder the gateway is started from.
DEFAULT_DATA_DIR = (
    Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "prefect-webhook-gateway"
)
# Where the queue lived by default before: a start with the default warns while one is there.
OLD_DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "gateway"
DEFAULT_ENV_FILE = REPO_ROOT / "webhooks.env"
DEFAULT_MAX_CONNECTIONS = 1000
ADMIN_TOKEN_VARIABLE = "GATEWAY_ADMIN_TOKEN"
# Half of what Prefect's SQLite server was measured to keep (1,000 events/s; at 1,400/s it dropped 29%).
DEFAULT_MAX_EVENTS_PER_SECOND = 500.0
DEFAULT_BATCH_SIZE = 50

# The flags, declared once: argparse and docs/gateway.md's table (python -m devstack.settings_docs) read them.
ADDRESS_FLAGS = (
    Flag("--host", "", "the gateway's address", value=DEFAULT_HOST),
    Flag("--port", "", "the gateway's port", parse=int, value=DEFAULT_PORT),
    Flag("--config", "webhooks/webhooks.toml", "webhooks config file", parse=Path, value=DEFAULT_CONFIG),
)
SERVE_FLAGS = (
    *ADDRESS_FLAGS,
    Flag(
        "--data-dir",
        "$XDG_STATE_HOME/prefect-webhook-gateway ($XDG_STATE_HOME: ~/.local/state if unset)",
        "where the durable queue lives, one gateway per folder",
        parse=Path,
        value=DEFAULT_DATA_DIR,
    ),
    Flag(
        "--rebind-queue",
        "",
        "forward events queued for another Prefect API to this PREFECT_API_URL",
        action="store_true",
    ),
    Flag(
        "--max-queued-bytes", "1 GiB", "events waiting for Prefect, at most; beyond, 503", parse=positive(int)
    ),
    Flag(
        "--max-events-per-second",
        "",
        "ceiling on events sent to Prefect per second",
        parse=positive(float),
        value=DEFAULT_MAX_EVENTS_PER_SECOND,
    ),
    Flag(
        "--batch-size",
        "",
        "events per POST to Prefect",
        parse=positive(int),
        value=DEFAULT_BATCH_SIZE,
    ),
    Flag(
        "--max-in-flight",
        "",
        "batches on their way to Prefect at once, still within the ceiling",
        parse=positive(int),
        value=1,
    ),
    Flag("--max-body-bytes", "1 MiB", "largest accepted request body; larger gets 413", parse=positive(int)),
    Flag(
        "--body-timeout",
        "10",
        "seconds a request body may take to arrive; slower gets 408",
        parse=positive(float),
    ),
    Flag(
        "--max-connections",
        "",
        "open connections at most; beyond, 503",
        parse=positive(int),
        value=DEFAULT_MAX_CONNECTIONS,
    ),
    Flag(
        "--hide-header",
        "",
        "a request header templates and events never see, beside Authorization, "
        "Proxy-Authorization, Cookie and X-Api-Key (repeatable)",
        action="append",
        metavar="NAME",
    ),
    Flag(
        "--allowed-origin",
        "",
        "a CloudEvents origin (WebHook-Request-Origin) whose OPTIONS handshake protected "
        "webhooks answer without auth, e.g. eventgrid.azure.net (repeatable)",
        action="append",
        metavar="ORIGIN",
    ),
    Flag(
        "--allow-unauthenticated",
        "",
        "serve webhooks without auth on a non-loopback address",
        action="store_true",
    ),
)
PROVISION_FLAGS = (
    Flag("--local", "", "write the gateway's URLs instead; no network calls", action="store_true"),
    *ADDRESS_FLAGS,
    Flag("--env-file", "webhooks.env", "file to write", parse=Path, value=DEFAULT_ENV_FILE),
    Flag(
        "--allow-any-host",
        "",
        "send the API key to a PREFECT_API_URL that is not https://api.prefect.cloud",
        action="store_true",
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webhooks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the webhook gateway for a self-hosted Prefect server")
    add_flags(serve, SERVE_FLAGS)
    provision = commands.add_parser(
        "provision", help="create the webhooks in Prefect Cloud and write their URLs"
    )
    add_flags(provision, PROVISION_FLAGS)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _serve(args) if args.command == "serve" else _provision(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from webhooks.forwarder import Forwarder
    from webhooks.gateway import DEFAULT_BODY_SECONDS, DEFAULT_MAX_BODY_BYTES, WebhookGateway
    from webhooks.outbox import DEFAULT_MAX_QUEUED_BYTES, Outbox, QueueBoundElsewhere, bind_queue
    from webhooks.queue_lock import QueueInUse, lock_queue
    from webhooks.rendering import HIDDEN_HEADERS

    webhooks = load_catalog(args.config)
    api_url, api_key, auth_string = _prefect_settings()
    if not api_url:
        raise ConfigError(
            "PREFECT_API_URL is not set: set it to your Prefect server's API, e.g. http://127.0.0.1:4200/api"
        )
    open_hooks = [webhook.slug for webhook in webhooks if webhook.auth == "none"]
    if open_hooks and not _loopback(args.host) and not args.allow_unauthenticated:
        raise ConfigError(
            f"{', '.join(open_hooks)} take requests without auth, and {args.host} is reachable from "
            f"other machines: "
            f"set auth in {args.config}, listen on 127.0.0.1, or pass --allow-unauthenticated"
        )
    auth_headers = {}
    if auth_string:
        auth_headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
    elif api_key:
        auth_headers["Authorization"] = f"Bearer {api_key}"
    outbox_path = args.data_dir / "outbox.sqlite3"
    try:
        lock = lock_queue(args.data_dir, args.host, args.port)  # held until the process ends
        previous_api = bind_queue(outbox_path, api_url.rstrip("/"), args.rebind_queue)
    except (QueueInUse, QueueBoundElsewhere) as error:
        raise ConfigError(str(error)) from None
    outbox = Outbox(outbox_path, args.max_queued_bytes or DEFAULT_MAX_QUEUED_BYTES)
    forwarder = Forwarder(
        outbox, api_url, args.max_events_per_second, args.batch_size, auth_headers, args.max_in_flight
    )
    gateway = WebhookGateway(
        webhooks,
        outbox,
        forwarder,
        args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        body_seconds=args.body_timeout or DEFAULT_BODY_SECONDS,
        hidden_headers=HIDDEN_HEADERS | {name.lower() for name in args.hide_header},
        allowed_origins=frozenset(args.allowed_origin),
        admin_token=os.environ.get(ADMIN_TOKEN_VARIABLE) or None,
    )
    base = f"http://{args.host}:{args.port}"
    print(
        f"Webhook gateway on {base}, forwarding to {api_url} "
        f"at up to {args.max_events_per_second:g} events/s",
        flush=True,
    )
    for webhook in webhooks:
        print(f"  {base}/hooks/{webhook.slug}  ({webhook.name}, auth: {webhook.auth})", flush=True)
    where = (
        " (the default: a per-user state folder; --data-dir to choose)"
        if args.data_dir == DEFAULT_DATA_DIR
        else ""
    )
    print(f"Queue: {outbox.path}{where}   Health: {base}/health", flush=True)
    log = logging.getLogger("webhooks.gateway")
    if open_hooks:
        log.warning(
            "%s accept(s) requests without auth: anyone who reaches %s can make events",
            ", ".join(open_hooks),
            base,
        )
    if previous_api:
        log.warning("the queue was bound to %s; now to %s", previous_api, api_url)
    if args.data_dir == DEFAULT_DATA_DIR and (OLD_DEFAULT_DATA_DIR / "outbox.sqlite3").exists():
        log.warning(
            "a queue from an earlier version is in %s: if it still holds events, run once with --data-dir %s",
            OLD_DEFAULT_DATA_DIR,
            OLD_DEFAULT_DATA_DIR,
        )
    uvicorn.run(
        gateway.app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        limit_concurrency=args.max_connections,
    )
    lock.close()
    return 0


def _provision(args: argparse.Namespace) -> int:
    from webhooks.provisioning import (
        CloudWebhooks,
        ProvisioningError,
        gateway_urls,
        provision_cloud,
        sender_settings,
        write_env_file,
    )
    from webhooks.rendering import check_template

    webhooks = load_catalog(args.config)
    for webhook in webhooks:
        check_template(webhook)
    if args.local:
        results = gateway_urls(webhooks, args.host, args.port)
    else:
        api_url, api_key, _ = _prefect_settings()
        try:
            cloud = CloudWebhooks(api_url, api_key, args.allow_any_host)
            try:
                results = provision_cloud(webhooks, cloud)
            finally:
                cloud.close()
        except ProvisioningError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    for result in results:
        print(f"{result.webhook.name:<16} {result.action:<10} {result.url}")
    values = sender_settings(results)
    try:
        write_env_file(args.env_file, values)
    except ProvisioningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {', '.join(values)} to {args.env_file}")
    return 0


def _prefect_settings() -> tuple[str | None, str | None, str | None]:
    """PREFECT_API_URL, PREFECT_API_KEY and PREFECT_API_AUTH_STRING from the environment or profile."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
    return api.url, secret(api.key), secret(api.auth_string)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
