"""The endpoint YAML: what it accepts, and how clearly it says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import ConfigError, load_config, parse_config

GOOD = """
endpoints:
  - name: crm
    url: https://hooks.example.com/fleetgate
    auth:
      basic: {username: fleet, password: "${CRM_PASSWORD}"}
    headers:
      X-Device: "[IMEI]"
      X-Literal: "$${NOT_EXPANDED}"
    tls: {verify: true, ca_file: ca.pem}
    timeout_seconds: 5
  - name: backup_2
    url: http://127.0.0.1:8080/hook
    auth: {bearer: "${TOKEN}"}
    enabled: false
"""


def test_a_full_config_loads_with_env_references(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not parsed at load time")
    (tmp_path / "connector.yaml").write_text(GOOD)
    config = load_config(tmp_path / "connector.yaml", env={"CRM_PASSWORD": "pa:ss", "TOKEN": "abc"})
    crm, backup = config.endpoints
    assert crm.auth is not None and crm.auth.basic is not None
    assert crm.auth.basic.password.get_secret_value() == "pa:ss"
    assert "pa:ss" not in repr(config)  # secrets stay out of logs and tracebacks
    assert crm.headers == {"X-Device": "[IMEI]", "X-Literal": "${NOT_EXPANDED}"}
    assert crm.tls.ca_file == tmp_path / "ca.pem"  # relative to the config file
    assert crm.timeout_seconds == 5
    assert backup.auth is not None and backup.auth.bearer is not None
    assert backup.auth.bearer.get_secret_value() == "abc"
    assert backup.tls.verify is True and backup.timeout_seconds == 10
    assert [e.name for e in config.enabled] == ["crm"]


def _endpoint(**fields: object) -> str:
    lines = ["endpoints:", "  - name: a", "    url: http://127.0.0.1/hook"]
    lines += [f"    {key}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("endpoints: [\n", "not valid YAML"),
        ("- name: a\n", "the top level must be a mapping"),
        ("", "endpoints: Field required"),
        ("endpoints: []\n", "endpoints: List should have at least 1 item"),
        ("endpoints:\n  - url: http://x/\n", "endpoints[0].name: Field required"),
        ("endpoints:\n  - {name: Bad Name, url: 'http://x/'}\n", "endpoints[0].name"),
        (
            "endpoints:\n  - {name: a, url: 'http://x/'}\n  - {name: a, url: 'http://y/'}\n",
            "endpoint name 'a' is used twice",
        ),
        (_endpoint(url="ftp://x/"), "url (endpoint 'a'): must be an http:// or https:// URL"),
        (_endpoint(timeout="3"), "endpoints[0].timeout (endpoint 'a'): Extra inputs"),
        (_endpoint(timeout_seconds="0"), "endpoints[0].timeout_seconds (endpoint 'a')"),
        (_endpoint(auth="{}"), "endpoints[0].auth (endpoint 'a'): give exactly one of"),
        (
            _endpoint(auth="{basic: {username: u}}"),
            "endpoints[0].auth.basic.password (endpoint 'a'): Field required",
        ),
        (
            _endpoint(auth="{bearer: t, basic: {username: u, password: p}}"),
            "give exactly one of 'basic' or 'bearer'",
        ),
        (_endpoint(auth="{bearer: t}", headers="{Authorization: x}"), "not both"),
        (_endpoint(headers="{Content-Type: text/plain}"), "'Content-Type' is set by the connector"),
        (_endpoint(headers="{webhook-id: x}"), "'webhook-id' is set by the connector"),
        (_endpoint(headers="{'bad header': x}"), "'bad header' is not a valid header name"),
        (_endpoint(tls="{ca_file: /no/such/ca.pem}"), "ca_file '/no/such/ca.pem' is not"),
        (_endpoint(tls="{verify: false, ca_file: x.pem}"), "'ca_file' has no effect"),
        (_endpoint(tls="{verify: maybe}"), "endpoints[0].tls.verify (endpoint 'a')"),
        (
            _endpoint(auth="{bearer: '${NO_SUCH_VARIABLE}'}"),
            "endpoints[0].auth.bearer: environment variable NO_SUCH_VARIABLE is not set",
        ),
        (_endpoint(auth="{bearer: '${not-a-name}'}"), "is not a valid variable reference"),
    ],
)
def test_a_bad_config_says_which_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, "connector.yaml", env={})
    assert str(error.value).startswith("connector.yaml: ")
    assert expected in str(error.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the connector config"):
        load_config(tmp_path / "missing.yaml")
