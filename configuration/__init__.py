"""What the project's packages share without importing each other: declared settings, the repository root.

`file_relay`, `webhooks` and `prefect_flows` import nothing from each other; each may import
this package, which imports none of them.
"""

from pathlib import Path

# Where webhooks.env and the local stack's .local/ live (the packages are installed in editable mode).
REPO_ROOT = Path(__file__).resolve().parent.parent
