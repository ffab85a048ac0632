"""infra/: the Bicep scans clean, its parts fit together, and it sets exactly the settings the code reads.

Nothing here deploys: Azure cannot be reached from this machine and the Bicep compiler cannot be
installed here, so checkov and shellcheck (in .venv-iac, `make install`) and the Bicep parser
checkov itself uses (pycep) read the files, and the app is indexed with the settings they set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from configuration import REPO_ROOT as REPO

INFRA = REPO / "infra"
STATIC_TOOLS = REPO / ".venv-iac" / "bin"

# Set in Azure by the platform or for it, not read by file_relay.
PLATFORM_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
# Flex Consumption refuses this app setting: functionAppConfig.runtime names the worker instead.
RUNTIME_SETTING = "FUNCTIONS_WORKER_RUNTIME"
# Where Azure deliberately differs from the code's laptop default.
AZURE_VALUES = {"BLOB_TRIGGER_SOURCE": "EventGrid"}


@cache
def bicep(relative_path: str) -> Any:
    """The parsed Bicep file infra/<relative_path>."""
    return BicepParser().parse(text=(INFRA / relative_path).read_text())


def static_tool(name: str) -> Path:
    """A tool from the static-checks venv, or a failure saying how to install it."""
    path = STATIC_TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install` (it creates .venv-iac from requirements-iac.txt)")
    return path


def resolve(expression: object) -> str | None:
    """A main.bicep value as deployed with default parameters; None when computed at deploy time."""
    main = bicep("main.bicep")
    if not isinstance(expression, str) or "${" in expression or expression in main["variables"]:
        return None
    if expression in main["parameters"]:
        return main["parameters"][expression]["default"]
    return expression


def module_params(symbol: str) -> dict:
    """The parameters main.bicep passes to its module `symbol`."""
    return bicep("main.bicep")["modules"][symbol]["config"]["params"]


def deployed_settings() -> dict[str, object]:
    """Every app setting the Bicep gives the Function App: name -> Bicep expression."""
    module = bicep("modules/function-app.bicep")
    assert module["resources"]["app"]["config"]["properties"]["siteConfig"]["appSettings"] == {
        "function": {
            "type": "concat",
            "parameters": {"arg_1": "platformSettings", "arg_2": "appSettings", "arg_3": "vaultSettings"},
        }
    }, "function-app.bicep must deploy exactly platformSettings + appSettings + vaultSettings"
    groups = (
        module["variables"]["platformSettings"]["value"],
        module_params("app")["appSettings"],
        module_params("vault")["secrets"]["settings"],
    )
    settings = {}
    for group in groups:
        for setting in group:
            assert setting["name"] not in settings, f"{setting['name']} is set twice"
            settings[setting["name"]] = setting["value"]
    return settings


def code_settings() -> dict:
    """The settings file_relay reads, by name (file_relay/settings.py is the one list)."""
    try:
        from file_relay.settings import SETTINGS
    except ImportError as error:
        pytest.fail(
            f"the Function App's settings list cannot be imported ({error}): file_relay/ is issue 3's part"
        )

    return {setting.name: setting for setting in SETTINGS}


def test_bicep_scan_finds_nothing_unexplained() -> None:
    checkov = static_tool("checkov")
    # --skip-download: no calls to the vendor's platform; the checks ship with the pinned package.
    command: list[str | Path] = [
        checkov,
        "--directory",
        INFRA,
        "--framework",
        "bicep",
        "--skip-download",
        "--output",
        "json",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no report (exit {run.returncode}):\n{run.stderr[-3000:]}")
    summary, results = report["summary"], report["results"]

    assert summary["parsing_errors"] == 0, f"checkov could not parse: {results['parsing_errors']}"
    assert summary["passed"] > 0 and summary["resource_count"] > 0, f"checkov checked nothing: {summary}"
    failed = [
        f"{check['check_id']} {check['check_name']}: {check['file_path']} lines {check['file_line_range']}"
        for check in results["failed_checks"]
    ]
    assert not failed, "fix these, or skip them inside the resource with a reason:\n" + "\n".join(failed)
    unexplained = [
        f"{check['check_id']} at {check['file_path']}"
        for check in results["skipped_checks"]
        if len(check["check_result"].get("suppress_comment", "").strip()) < 40
    ]
    assert not unexplained, "each `checkov:skip=ID: reason` needs a real reason:\n" + "\n".join(unexplained)


def test_hook_scripts_pass_shellcheck() -> None:
    scripts = sorted((INFRA / "scripts").glob("*.sh"))
    assert scripts, "infra/scripts/*.sh not found"
    run = subprocess.run([static_tool("shellcheck"), "--shell=sh", *scripts], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable (azd runs it directly)"


def test_bicep_sets_every_setting_the_code_reads_and_no_other() -> None:
    code = set(code_settings())
    # An identity-based connection X is set as X__accountName, X__credential, ...
    deployed = {name.split("__")[0] for name in deployed_settings()}

    missing = code - deployed - {RUNTIME_SETTING}
    assert not missing, f"file_relay reads these but the Bicep does not set them: {sorted(missing)}"
    unknown = deployed - code - PLATFORM_SETTINGS
    assert not unknown, (
        f"the Bicep sets these but file_relay/settings.py does not know them: {sorted(unknown)}"
    )
    assert RUNTIME_SETTING not in deployed, f"Flex Consumption refuses {RUNTIME_SETTING} as an app setting"


def test_bicep_values_are_the_code_defaults_except_where_azure_differs() -> None:
    settings = code_settings()
    compared = {}
    for name, expression in deployed_settings().items():
        value = resolve(expression)
        if name in settings and value is not None:
            compared[name] = value
            expected = AZURE_VALUES.get(name, settings[name].default)
            assert value == expected, (
                f"{name}: the Bicep deploys {value!r}, the code's default is {expected!r}"
            )
    # Not vacuous: the literal and parameter-default values were all checked.
    assert set(AZURE_VALUES) | {"INCOMING_CONTAINER", "EMIT_QUEUE", "RECORDS_QUEUE"} <= set(compared)


def test_flex_runtime_is_the_code_worker_and_the_project_python() -> None:
    app = bicep("modules/function-app.bicep")["resources"]["app"]["config"]
    runtime = app["properties"]["functionAppConfig"]["runtime"]
    pyproject = (REPO / "pyproject.toml").read_text()
    python = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject).group(1)
    assert runtime == {"name": code_settings()[RUNTIME_SETTING].default, "version": python}


def unresolved_reference(setting: str) -> str:
    """What Azure gives the app for a Key Vault reference it could not resolve: the reference itself."""
    secret = setting.replace("_", "-")
    return f"@Microsoft.KeyVault(SecretUri=https://kv-example.vault.azure.net/secrets/{secret}/0123abcd)"


def test_app_indexes_every_function_under_the_bicep_settings_with_references_unresolved() -> None:
    environment = {
        name: value for name, expr in deployed_settings().items() if (value := resolve(expr)) is not None
    }
    # Indexing reads only names; the account is the one the Bicep creates, not reached here.
    environment["AzureWebJobsStorage__accountName"] = "stexample"
    # A first deploy can start the app before its identity may read the vault.
    vault_settings = [setting["name"] for setting in module_params("vault")["secrets"]["settings"]]
    environment |= {name: unresolved_reference(name) for name in vault_settings}
    index = (
        "import json, function_app\n"
        "functions = function_app.app.get_functions()\n"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json()) for f in functions}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", index],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **environment},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    functions = {name: function["bindings"] for name, function in json.loads(run.stdout).items()}
    assert set(functions) == {"announce_file", "emit_records"}
    subscription = bicep("blob-subscription.bicep")["parameters"]["functionName"]["default"]
    assert subscription in functions, (
        f"blob-subscription.bicep targets {subscription}, the app has {sorted(functions)}"
    )
    trigger = next(binding for binding in functions[subscription] if binding["type"] == "blobTrigger")
    assert trigger["source"] == "EventGrid"
    assert trigger["path"] == f"{environment['INCOMING_CONTAINER']}/{{name}}"
    assert trigger["connection"] == "AzureWebJobsStorage"


def test_storage_creates_the_container_and_queues_the_app_uses() -> None:
    storage = module_params("storage")
    settings = {setting["name"]: setting["value"] for setting in module_params("app")["appSettings"]}
    assert settings["INCOMING_CONTAINER"] in storage["containerNames"]
    assert {settings["EMIT_QUEUE"], settings["RECORDS_QUEUE"]} <= set(storage["queueNames"])


def test_modules_are_called_with_the_parameters_they_declare() -> None:
    main = bicep("main.bicep")
    main_text = (INFRA / "main.bicep").read_text()
    for symbol, module in main["modules"].items():
        declared = bicep(module["detail"]["path"])
        passed = set(module["config"]["params"])
        params = declared["parameters"]
        required = {name for name, param in params.items() if param["default"] is None}
        assert passed <= set(params), (
            f"module {symbol} gets undeclared parameters {sorted(passed - set(params))}"
        )
        assert required <= passed, f"module {symbol} misses required parameters {sorted(required - passed)}"
        used = set(re.findall(rf"\b{symbol}\.outputs\.(\w+)", main_text))
        outputs = set(declared.get("outputs", {}))
        assert used <= outputs, f"{symbol} has no outputs {sorted(used - outputs)}"


def test_azd_parameters_and_hooks_fit_the_templates() -> None:
    main = bicep("main.bicep")
    azd_params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    required = {name for name, param in main["parameters"].items() if param["default"] is None}
    assert set(azd_params) <= set(main["parameters"])
    assert required <= set(azd_params), f"azd would not pass {sorted(required - set(azd_params))}"

    # The postdeploy hook reads main.bicep's outputs and passes blob-subscription.bicep's parameters.
    script = (INFRA / "scripts" / "subscribe-blob-trigger.sh").read_text()
    needed = set(re.search(r"for name in ([^;]+);", script).group(1).replace("\\", " ").split())
    assert needed <= set(main["outputs"]), (
        f"main.bicep does not output {sorted(needed - set(main['outputs']))}"
    )
    subscription_params = bicep("blob-subscription.bicep")["parameters"]
    start = script.index("--parameters")
    arguments = script[start : script.index("--output", start)]
    passed = set(re.findall(r"^\s+(\w+)=\"\$", arguments, re.MULTILINE))
    required = {name for name, param in subscription_params.items() if param["default"] is None}
    assert required <= passed <= set(subscription_params)

    hooks = re.findall(r"run: (\S+)", (REPO / "azure.yaml").read_text())
    assert hooks and all((REPO / hook).is_file() for hook in hooks), hooks


def role_assignments(relative_path: str) -> dict[str, dict]:
    """The role assignments in infra/<relative_path>, by symbol."""
    resources = bicep(relative_path)["resources"]
    return {
        symbol: resource["config"].get("config", resource["config"])
        for symbol, resource in resources.items()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    }


def test_blob_data_writers_other_than_the_app_are_confined_to_one_container() -> None:
    checked = []
    for path in ("modules/access.bicep", "modules/event-grid.bicep"):
        resources = bicep(path)["resources"]
        for symbol, assignment in role_assignments(path).items():
            if "storageBlobDataContributor" in json.dumps(assignment["properties"]["roleDefinitionId"]):
                scope = resources[assignment["scope"]]
                assert scope["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers", (
                    f"{path} {symbol}: Storage Blob Data Contributor on {assignment['scope']} can read "
                    f"azure-webjobs-secrets and replace the app package; scope it to its container"
                )
                checked.append(symbol)
    assert sorted(checked) == ["deadLetterRole", "uploaderRoles"]


def test_mainframe_and_deployer_write_to_the_incoming_container_only() -> None:
    access = bicep("modules/access.bicep")
    assert access["resources"]["incoming"]["config"]["name"] == "incomingContainerName"
    assert module_params("access")["incomingContainerName"] == "incomingContainerName"
    writers = {json.dumps(writer["principalId"]) for writer in access["variables"]["writers"]["value"]}
    assert writers == {'"userPrincipalId"', '"uploaderPrincipalId"'}


def test_scm_and_ftp_basic_publishing_credentials_are_off() -> None:
    policies = bicep("modules/function-app.bicep")["resources"]["basicPublishing"]
    assert policies["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    assert policies["config"]["loop_type"]["detail"]["array_name"] == ["scm", "ftp"]
    assert policies["config"]["config"] == {"parent": "app", "name": "policy", "properties": {"allow": False}}


def test_maximum_instance_count_allows_what_flex_consumption_allows() -> None:
    decorators = bicep("main.bicep")["parameters"]["maximumInstanceCount"]["decorators"]
    limits = {decorator["type"]: decorator["argument"] for decorator in decorators}
    assert (limits["min_value"], limits["max_value"]) == (1, 1000)


# The warning the Functions host logs when it poisons a message (Azure WebJobs Storage Queues
# extension, QueueProcessor.CopyMessageToPoisonQueueAsync), for both poison queues.
POISON_LOG = "Message has reached MaxDequeueCount of 5. Moving message to queue '{queue}'."


def test_alerts_watch_both_poison_queues_and_event_grids_failures() -> None:
    alerts = bicep("modules/alerts.bicep")
    queues = [
        value.replace("${emitQueueName}", resolve("emitQueueName"))
        for value in module_params("alerts")["poisonQueueNames"]
    ]
    emit_poison = code_settings()["EMIT_QUEUE"].default + "-poison"
    assert sorted(queues) == sorted([emit_poison, "webjobs-blobtrigger-poison"])

    query = alerts["variables"]["poisonQuery"]["value"].replace("\\'", "'")
    prefix = re.search(r'message startswith "([^"]+)"', query).group(1)
    pattern = re.search(r'extract\("([^"]+)", 1, message\)', query).group(1)
    for queue in queues:
        line = POISON_LOG.format(queue=queue)
        assert line.startswith(prefix) and re.search(pattern, line).group(1) == queue

    metrics = {alert["metric"] for alert in alerts["variables"]["topicAlerts"]["value"]}
    assert metrics == {"DeadLetteredCount", "DroppedEventCount", "DeliveryAttemptFailCount"}
    logs = {
        symbol: resource["config"]["properties"]["logs"]
        for symbol, resource in alerts["resources"].items()
        if resource["type"] == "Microsoft.Insights/diagnosticSettings"
    }
    assert logs == {
        "vaultAudit": [{"categoryGroup": "audit", "enabled": True}],
        "topicDeliveryFailures": [{"category": "DeliveryFailures", "enabled": True}],
    }


def test_the_vault_name_follows_the_seed_the_postdown_hook_renews() -> None:
    name = json.dumps(module_params("vault")["name"])
    assert "uniqueString(resourceToken, keyVaultNameSeed)" in name
    azd_params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert azd_params["keyVaultNameSeed"] == {"value": "${AZURE_KEY_VAULT_NAME_SEED=}"}
