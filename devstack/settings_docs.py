"""Write the docs' settings tables from the declarations: `.venv/bin/python -m devstack.settings_docs`.

Each table sits in its page between `<!-- settings:NAME -->` and `<!-- /settings:NAME -->`;
tests/test_docs.py fails when a page and its declaration differ.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from configuration import REPO_ROOT
from configuration.declared import generated_block, settings_table, with_generated_block
from file_relay.settings import SETTINGS
from prefect_flows.deployment import SETTINGS as FLOW_SETTINGS
from webhooks.__main__ import PROVISION_FLAGS, SERVE_FLAGS

DOCS = REPO_ROOT / "docs"
TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "app-settings": (DOCS / "function-app.md", lambda: settings_table(SETTINGS)),
    "gateway-serve": (DOCS / "gateway.md", lambda: settings_table(SERVE_FLAGS, heading="Flag")),
    "gateway-provision": (DOCS / "gateway.md", lambda: settings_table(PROVISION_FLAGS, heading="Flag")),
    "flow": (DOCS / "serving.md", lambda: settings_table(FLOW_SETTINGS, heading="Variable")),
}


def stale() -> list[str]:
    """The tables whose page differs from their declaration."""
    return [
        name for name, (page, table) in TABLES.items() if generated_block(page.read_text(), name) != table()
    ]


def main() -> int:
    for name in stale():
        page, table = TABLES[name]
        page.write_text(with_generated_block(page.read_text(), name, table()))
        print(f"wrote the {name} table in {page.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
