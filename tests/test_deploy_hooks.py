"""azure.yaml and its hook scripts: what azd packages, and what each hook asks of az and azd.

azd, az and PowerShell cannot be installed here and Azure cannot be reached, so the posix hooks run
against stand-ins on PATH, small scripts written per test that record their arguments and answer
as the real tools do (a stand-in `az` also refuses, as az does, a subscription it cannot see). The
PowerShell hooks are checked statically: same az/azd calls and flags, same settings, as their twins.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
import yaml

from configuration import REPO_ROOT as REPO

SCRIPTS = REPO / "infra" / "scripts"
AZURE_YAML = yaml.safe_load((REPO / "azure.yaml").read_text())

# Answers az's real behaviour: a command for a subscription this login cannot see fails like this.
STAND_IN_AZ = """#!{python}
import itertools, json, os, re, sys
args = sys.argv[1:]
command = " ".join(itertools.takewhile(lambda arg: not arg.startswith("-"), args))
calls = os.environ["AZ_CALLS"]
earlier = sum(1 for line in open(calls) if json.loads(line)[0] == command) if os.path.exists(calls) else 0
with open(calls, "a") as log:
    log.write(json.dumps([command, args]) + "\\n")
plan = json.load(open(os.environ["AZ_PLAN"]))
if command == "rest":
    subscription = re.search(r"/subscriptions/([^/]+)/", args[args.index("--url") + 1]).group(1)
else:
    subscription = args[args.index("--subscription") + 1] if "--subscription" in args else plan["default"]
if subscription not in plan["visible"]:
    sys.stderr.write(f"ERROR: Subscription '{{subscription}}' not found. ")
    sys.stderr.write("Check the spelling and casing and try again.\\n")
    sys.exit(1)
answers = plan["answers"].get(command, [{{}}])
answer = answers[min(earlier, len(answers) - 1)]
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("exit", 0))
"""

APP_ID = "/subscriptions/sub-azd/resourceGroups/rg-x/providers/Microsoft.Web/sites/func-x"
OUTPUTS = {
    "AZURE_SUBSCRIPTION_ID": "sub-azd",
    "AZURE_TENANT_ID": "tenant-x",
    "AZURE_RESOURCE_GROUP": "rg-x",
    "AZURE_FUNCTION_APP_NAME": "func-x",
    "AZURE_STORAGE_ACCOUNT_NAME": "stx",
    "AZURE_EVENT_GRID_TOPIC_NAME": "evgt-x",
    "INCOMING_CONTAINER_NAME": "incoming",
    "DEADLETTER_CONTAINER_NAME": "deadletter",
}
HOST_STARTING = "ERROR: Encountered an error (ServiceUnavailable) from host runtime.\n"


def stand_in(bin_dir: Path, name: str, source: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(source)
    (bin_dir / name).chmod(0o755)


class StandInAz:
    """`az` (and `sleep`, so a wait costs nothing) on PATH: records every call, answers from a plan."""

    def __init__(self, tmp_path: Path, visible: list[str], answers: dict[str, list[dict]]) -> None:
        self.calls_file, self.sleeps_file = tmp_path / "az-calls", tmp_path / "sleeps"
        plan = tmp_path / "az-plan.json"
        # az's own default subscription is not azd's: only --subscription reaches azd's.
        plan.write_text(json.dumps({"default": "sub-az-default", "visible": visible, "answers": answers}))
        stand_in(tmp_path / "bin", "az", STAND_IN_AZ.format(python=sys.executable))
        stand_in(tmp_path / "bin", "sleep", f'#!/bin/sh\necho "$1" >> "{self.sleeps_file}"\n')
        self.env = {
            **os.environ,
            **OUTPUTS,
            "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "AZ_CALLS": str(self.calls_file),
            "AZ_PLAN": str(plan),
        }

    def calls(self) -> list[tuple[str, list[str]]]:
        return [tuple(json.loads(line)) for line in self.calls_file.read_text().splitlines()]

    def sleeps(self) -> list[str]:
        return self.sleeps_file.read_text().split() if self.sleeps_file.exists() else []

    def subscribe(self) -> subprocess.CompletedProcess[str]:
        """Run the postdeploy hook as azd does."""
        script = SCRIPTS / "subscribe-blob-trigger.sh"
        return subprocess.run([str(script)], capture_output=True, text=True, env=self.env, timeout=60)


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_post_deploy_names_azds_subscription_and_refreshes_the_vault_references_before_waiting(
    tmp_path: Path,
) -> None:
    az = StandInAz(
        tmp_path,
        visible=["sub-azd", "sub-az-default"],
        answers={
            "functionapp show": [{"stdout": APP_ID + "\n"}],
            "functionapp keys list": [
                {"stderr": HOST_STARTING, "exit": 1},
                {"stderr": HOST_STARTING, "exit": 1},
                {"stdout": "\n"},
                {"stdout": "blobs-extension-key\n"},
            ],
        },
    )

    run = az.subscribe()

    assert run.returncode == 0, run.stderr
    commands = [command for command, _ in az.calls()]
    assert commands == ["functionapp show", "rest", *["functionapp keys list"] * 4, "deployment group create"]
    for command, args in az.calls():
        if command == "rest":
            assert (option(args, "--method"), option(args, "--url")) == (
                "post",
                f"{APP_ID}/config/configreferences/appsettings/refresh?api-version=2022-03-01",
            )
        else:
            assert option(args, "--subscription") == "sub-azd", (command, args)
            assert option(args, "--resource-group") == "rg-x"
    assert az.sleeps() == ["10"] * 3
    assert run.stderr.count("ServiceUnavailable") == 1, "az's error is shown, once per new reason"
    deployment = az.calls()[-1][1]
    assert "functionAppName=func-x" in deployment and "deadLetterContainerName=deadletter" in deployment
    assert "blobs-extension-key" not in run.stdout + run.stderr


def test_post_deploy_stops_at_once_with_azs_error_when_az_cannot_see_the_subscription(tmp_path: Path) -> None:
    az = StandInAz(tmp_path, visible=["sub-az-default"], answers={})

    run = az.subscribe()

    assert run.returncode == 1
    assert [command for command, _ in az.calls()] == ["functionapp show"]
    assert "Subscription 'sub-azd' not found" in run.stderr
    assert "az login --tenant tenant-x" in run.stderr


def test_post_deploy_gives_up_after_ten_minutes_and_says_where_to_look(tmp_path: Path) -> None:
    az = StandInAz(
        tmp_path,
        visible=["sub-azd"],
        answers={
            "functionapp show": [{"stdout": APP_ID + "\n"}],
            "functionapp keys list": [{"stdout": "\n"}],  # no key, ever
        },
    )

    run = az.subscribe()

    assert run.returncode == 1
    commands = [command for command, _ in az.calls()]
    assert commands.count("functionapp keys list") == 60 and "deployment group create" not in commands
    assert az.sleeps() == ["10"] * 59
    assert "No blobs_extension key after 10 minutes" in run.stderr
    assert "az functionapp function list --subscription sub-azd -g rg-x -n func-x" in run.stderr


def test_post_deploy_says_which_output_is_missing(tmp_path: Path) -> None:
    az = StandInAz(tmp_path, visible=["sub-azd"], answers={})
    az.env.pop("AZURE_SUBSCRIPTION_ID")

    run = az.subscribe()

    assert run.returncode == 1
    assert run.stderr.startswith("AZURE_SUBSCRIPTION_ID is not set: provision first")
    assert not az.calls_file.exists()


@pytest.fixture
def stand_in_azd(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """azd cannot be installed here: a stand-in on PATH records each `azd env set NAME VALUE`."""
    calls = tmp_path / "azd-calls"
    stand_in(
        tmp_path / "bin",
        "azd",
        '#!/bin/sh\n[ "$1 $2" = "env set" ] && printf "%s=%s\\n" "$3" "$4" >> "$AZD_CALLS"\n',
    )
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "AZD_CALLS": str(calls)}
    return env, calls


def use_webhooks_env(webhooks_env: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the preprovision hook on `webhooks_env`."""
    script = SCRIPTS / "use-webhooks-env.sh"
    return subprocess.run(["sh", str(script), str(webhooks_env)], capture_output=True, text=True, env=env)


def test_webhooks_env_reaches_the_azd_environment_without_other_lines(
    tmp_path: Path, stand_in_azd: tuple[dict[str, str], Path]
) -> None:
    env, calls = stand_in_azd
    webhooks_env = tmp_path / "webhooks.env"
    webhooks_env.write_bytes(
        b"# written by python -m webhooks provision\r\n"
        b"SUMMARY_WEBHOOK_URL=https://api.prefect.cloud/hooks/abc?x=1&y=2\r\n"
        b'AZURE_STORAGE_WEBHOOK_URL="https://api.prefect.cloud/hooks/def"\n'
        b"SUMMARY_WEBHOOK_SECRET='whsec_c2VjcmV0'\n"
        b"PREFECT_API_URL=https://api.prefect.cloud/api\n"
        b"RECONCILIATION_WEBHOOK_TOKEN=tok"  # no final newline
    )
    run = use_webhooks_env(webhooks_env, env)
    assert run.returncode == 0, run.stderr
    assert calls.read_text().splitlines() == [
        "SUMMARY_WEBHOOK_URL=https://api.prefect.cloud/hooks/abc?x=1&y=2",
        "AZURE_STORAGE_WEBHOOK_URL=https://api.prefect.cloud/hooks/def",
        "SUMMARY_WEBHOOK_SECRET=whsec_c2VjcmV0",
        "RECONCILIATION_WEBHOOK_TOKEN=tok",
    ]
    assert "whsec_" not in run.stdout + run.stderr, "the hook must never print values"


def test_missing_webhooks_env_says_how_to_make_it(
    tmp_path: Path, stand_in_azd: tuple[dict[str, str], Path]
) -> None:
    env, calls = stand_in_azd
    run = use_webhooks_env(tmp_path / "absent.env", env)
    assert run.returncode == 0
    assert "python -m webhooks provision" in run.stderr and "azd env set" in run.stderr
    assert not calls.exists()


def test_post_down_gives_the_next_vault_a_new_name(stand_in_azd: tuple[dict[str, str], Path]) -> None:
    env, calls = stand_in_azd

    run = subprocess.run([str(SCRIPTS / "renew-key-vault-name.sh")], capture_output=True, text=True, env=env)

    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"AZURE_KEY_VAULT_NAME_SEED=\d{14}\n", calls.read_text())


def hook_scripts() -> list[tuple[str, Path, Path]]:
    """Each azd hook with its posix and its windows script."""
    hooks = []
    for event, hook in AZURE_YAML["hooks"].items():
        assert set(hook) == {"posix", "windows"}, f"{event}: azd runs only the block for its OS"
        assert (hook["posix"]["shell"], hook["windows"]["shell"]) == ("sh", "pwsh")
        hooks.append((event, REPO / hook["posix"]["run"], REPO / hook["windows"]["run"]))
    return hooks


def test_every_hook_has_a_posix_script_and_its_windows_twin() -> None:
    hooks = hook_scripts()

    assert {event for event, _, _ in hooks} == {"preprovision", "postdeploy", "postdown"}
    for event, posix, windows in hooks:
        assert posix.is_file() and os.access(posix, os.X_OK), f"{event}: {posix} (azd runs it directly)"
        assert windows == posix.with_suffix(".ps1") and windows.is_file(), f"{event}: {windows}"


def logical_lines(script: Path) -> list[str]:
    """The script's lines with continuations joined and comments dropped."""
    continuation = "`\n" if script.suffix == ".ps1" else "\\\n"
    lines = script.read_text().replace(continuation, " ").splitlines()
    return [line for line in lines if not line.lstrip().startswith("#")]


def cli_calls(script: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every az/azd command line the script runs or prints, as (command words, sorted --flags)."""
    calls = []
    for line in logical_lines(script):
        for tool, words, rest in re.findall(r"(?<![\w.-])(azd?)((?: [a-z][a-z-]*)+)(.*)", line):
            flags = re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest)
            calls.append((tool + words, tuple(sorted(flags))))
    return calls


def test_windows_hooks_make_the_same_az_and_azd_calls_as_their_posix_twins() -> None:
    for event, posix, windows in hook_scripts():
        assert cli_calls(posix), f"{event}: {posix.name} calls neither az nor azd"
        assert sorted(cli_calls(windows)) == sorted(cli_calls(posix)), event


def test_windows_post_deploy_checks_the_same_outputs() -> None:
    posix = (SCRIPTS / "subscribe-blob-trigger.sh").read_text()
    windows = (SCRIPTS / "subscribe-blob-trigger.ps1").read_text()
    posix_names = re.search(r"for name in ([^;]+);", posix).group(1).replace("\\", " ").split()
    windows_names = re.findall(r"'([A-Z_]+)'", re.search(r"\$required = @\(([^)]+)\)", windows).group(1))
    assert windows_names == posix_names
    assert "AZURE_SUBSCRIPTION_ID" in posix_names


def azd_package() -> list[str]:
    """The paths azd would zip from the project folder: what a clone holds after `make install`
    (tracked files, and the folders .gitignore keeps out of git), less .funcignore's patterns,
    less local.settings.json, which azd always leaves out (Azure/azure-dev#5383)."""
    project = REPO / AZURE_YAML["services"]["api"]["project"]
    git = ["git", "-C", str(project), "ls-files"]
    tracked = subprocess.run(git, capture_output=True, text=True, check=True).stdout.splitlines()
    local = subprocess.run(
        [*git, "--others", "--ignored", "--exclude-standard", "--directory"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rules = [*(project / ".funcignore").read_text().splitlines(), "local.settings.json"]
    ignored = pathspec.GitIgnoreSpec.from_lines(rules)
    return sorted(path for path in tracked + local if not ignored.match_file(path))


def test_azd_packages_the_function_app_and_nothing_else() -> None:
    package = azd_package()

    # The app's packages: file_relay and the settings declarations it shares with the other packages.
    app = [
        f"{package}/{path.name}"
        for package in ("configuration", "file_relay")
        for path in (REPO / package).glob("*.py")
    ]
    assert package == sorted(["function_app.py", "host.json", "requirements.txt", *app])


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_azure_yaml_asks_for_an_azd_that_honours_funcignore_and_remote_build() -> None:
    # 1.18.0 reads .funcignore, 1.23.5 remoteBuild for Flex Consumption (azd's CHANGELOG).
    required = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)", AZURE_YAML["requiredVersions"]["azd"])
    assert required and version(required.group(1)) >= (1, 23, 5)
    service = AZURE_YAML["services"]["api"]
    assert (service["host"], service["language"], service["remoteBuild"]) == ("function", "python", True)
