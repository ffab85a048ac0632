"""The webhooks config: the four webhooks of the pipeline, and clear errors for mistakes."""

from pathlib import Path

import pytest

from webhooks.catalog import DEFAULT_CONFIG, ConfigError, Webhook, load_catalog
from webhooks.rendering import check_template


def test_the_repo_config_serves_the_four_webhooks_under_their_contract_names():
    webhooks = load_catalog(DEFAULT_CONFIG)
    assert [(w.name, w.slug, w.url_variable, w.split_array) for w in webhooks] == [
        ("mainframe", "mainframe", "MAINFRAME_WEBHOOK_URL", False),
        ("azure-storage", "azure-storage", "AZURE_STORAGE_WEBHOOK_URL", True),
        ("summary", "summary", "SUMMARY_WEBHOOK_URL", False),
        ("reconciliation", "reconciliation", "RECONCILIATION_WEBHOOK_URL", False),
    ]


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('name = "a"\ntemplate = "a.j2"\ncolour = "red"', r"webhook 'a': unknown key\(s\) colour"),
        ('name = "a"\ntemplate = "missing.j2"', "template .*missing.j2 does not exist"),
        ('name = "a"\ntemplate = "a.j2"\nauth = "basic"', "auth 'basic' must be one of"),
        ('name = "a"\ntemplate = "a.j2"\nslug = "a/b"', "slug 'a/b' must be"),
        ('template = "a.j2"', "`name` is required"),
    ],
)
def test_a_config_mistake_is_reported_with_the_webhook_and_the_key(tmp_path, entry, complaint):
    (tmp_path / "a.j2").write_text('{"event": "a", "resource": {"prefect.resource.id": "a"}}')
    config = tmp_path / "webhooks.toml"
    config.write_text(f"[[webhooks]]\n{entry}\n")
    with pytest.raises(ConfigError, match=complaint):
        load_catalog(config)


def test_two_webhooks_on_one_slug_are_refused(tmp_path):
    (tmp_path / "a.j2").write_text("{}")
    config = tmp_path / "webhooks.toml"
    config.write_text(
        '[[webhooks]]\nname = "a"\ntemplate = "a.j2"\n'
        '[[webhooks]]\nname = "b"\nslug = "a"\ntemplate = "a.j2"\n'
    )
    with pytest.raises(ConfigError, match="slug a used twice"):
        load_catalog(config)


def test_a_template_syntax_error_names_the_file_and_line():
    webhook = Webhook("lab", "", Path("lab.json.j2"), '{\n"event": "{{ body.x }"\n}', "lab")
    with pytest.raises(ConfigError, match=r"lab.json.j2, line 2"):
        check_template(webhook)
