"""Write the Function App's local.settings.json for `func start`: every app setting, on Azurite.

Values are the defaults from `file_relay.settings.SETTINGS`, Azurite as storage, the local
gateway's webhook URLs, and whatever `webhooks.env` (written by `python -m webhooks provision`)
sets for the Function App's webhook settings.

    .venv/bin/python -m devstack.functions_host.local_settings           # from webhooks.env
    .venv/bin/python -m devstack.functions_host.local_settings --sample  # the committed sample
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from configuration import REPO_ROOT
from configuration.declared import webhook_variable
from file_relay.settings import GATEWAY_URL, SETTINGS, WEBHOOKS

LOCAL_DEFAULTS = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    **{webhook_variable(name, "URL"): f"{GATEWAY_URL}/{name}" for name in WEBHOOKS},
}


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a dotenv file; blank lines and `#` comments skipped, quotes removed."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.removeprefix("export ").partition("=")
        if not separator or not name.strip():
            raise ValueError(f"{path}:{number} is not a NAME=value line: {line!r}")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def local_settings(overrides: Mapping[str, str] | None = None) -> dict:
    """local.settings.json's content: every setting once; `overrides` win for the names SETTINGS knows."""
    overrides = overrides or {}
    values = {s.name: overrides.get(s.name, LOCAL_DEFAULTS.get(s.name, s.default or "")) for s in SETTINGS}
    return {"IsEncrypted": False, "Values": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=REPO_ROOT / "webhooks.env")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "local.settings.json")
    parser.add_argument(
        "--sample", action="store_true", help="write local.settings.json.sample, ignoring --env-file"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing local.settings.json")
    args = parser.parse_args(argv)
    if args.sample:
        args.output, overrides = REPO_ROOT / "local.settings.json.sample", {}
    elif args.env_file.exists():
        overrides = read_env_file(args.env_file)
    else:
        print(
            f"{args.env_file} not found: using the local gateway's URLs ({GATEWAY_URL}/...).", file=sys.stderr
        )
        overrides = {}
    if args.output.exists() and not args.sample and not args.force:
        print(f"{args.output} exists; rerun with --force to replace it.", file=sys.stderr)
        return 1
    args.output.write_text(json.dumps(local_settings(overrides), indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
