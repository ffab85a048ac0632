"""Command line: `python -m webhooks serve` runs the gateway, `python -m webhooks provision` sets up the URLs.

    python -m webhooks serve [--host 127.0.0.1] [--port 4280] [--data-dir .local/gateway] ...
    python -m webhooks provision            # create/update the webhooks in Prefect Cloud
    python -m webhooks provision --local    # point the senders at the gateway instead
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from webhooks.catalog import DEFAULT_CONFIG, ConfigError, load_catalog

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 4280
DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "gateway"
DEFAULT_ENV_FILE = REPO_ROOT / "webhooks.env"
# Half of what Prefect's SQLite server was measured to keep (1,000 events/s; at 1,400/s it dropped 29%).
DEFAULT_MAX_EVENTS_PER_SECOND = 500.0
DEFAULT_BATCH_SIZE = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webhooks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the webhook gateway for a self-hosted Prefect server")
    _add_gateway_address(serve)
    serve.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="webhooks config file (default: %(default)s)")
    serve.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where the durable queue lives (default: %(default)s)")
    serve.add_argument("--max-events-per-second", type=_positive(float), default=DEFAULT_MAX_EVENTS_PER_SECOND,
                       help="ceiling on events sent to Prefect per second (default: %(default)s)")
    serve.add_argument("--batch-size", type=_positive(int), default=DEFAULT_BATCH_SIZE,
                       help="events per POST to Prefect (default: %(default)s)")
    serve.add_argument("--max-in-flight", type=_positive(int), default=1,
                       help="batches on their way to Prefect at once, still within the ceiling (default: %(default)s)")
    serve.add_argument("--max-body-bytes", type=_positive(int), default=None,
                       help="largest accepted request body; larger gets 413 (default: 1 MiB)")

    provision = commands.add_parser("provision", help="create the webhooks in Prefect Cloud and write their URLs")
    provision.add_argument("--local", action="store_true", help="write the gateway's URLs instead; no network calls")
    _add_gateway_address(provision)
    provision.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="webhooks config file (default: %(default)s)")
    provision.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE, help="file to write (default: %(default)s)")

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
    from webhooks.gateway import DEFAULT_MAX_BODY_BYTES, WebhookGateway
    from webhooks.outbox import Outbox

    webhooks = load_catalog(args.config)
    api_url, api_key, auth_string = _prefect_settings()
    if not api_url:
        raise ConfigError("PREFECT_API_URL is not set: set it to your Prefect server's API, e.g. http://127.0.0.1:4200/api")
    auth_headers = {}
    if auth_string:
        auth_headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
    elif api_key:
        auth_headers["Authorization"] = f"Bearer {api_key}"
    outbox = Outbox(args.data_dir / "outbox.sqlite3")
    forwarder = Forwarder(outbox, api_url, args.max_events_per_second, args.batch_size, auth_headers, args.max_in_flight)
    gateway = WebhookGateway(webhooks, outbox, forwarder, args.max_body_bytes or DEFAULT_MAX_BODY_BYTES)
    base = f"http://{args.host}:{args.port}"
    print(f"Webhook gateway on {base}, forwarding to {api_url} at up to {args.max_events_per_second:g} events/s", flush=True)
    for webhook in webhooks:
        print(f"  {base}/hooks/{webhook.slug}  ({webhook.name}, auth: {webhook.auth})", flush=True)
    print(f"Queue: {outbox.path}   Health: {base}/health", flush=True)
    uvicorn.run(gateway.app, host=args.host, port=args.port, access_log=False, log_level="warning", lifespan="on")
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
            cloud = CloudWebhooks(api_url, api_key)
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
    write_env_file(args.env_file, values)
    print(f"Wrote {', '.join(values)} to {args.env_file}")
    return 0


def _prefect_settings() -> tuple[str | None, str | None, str | None]:
    """PREFECT_API_URL, PREFECT_API_KEY and PREFECT_API_AUTH_STRING from the environment or profile."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
    return api.url, secret(api.key), secret(api.auth_string)


def _add_gateway_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="the gateway's address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the gateway's port (default: %(default)s)")


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


if __name__ == "__main__":
    sys.exit(main())
