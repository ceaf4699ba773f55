"""The endpoint YAML: what it accepts, and how clearly it says what is wrong."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import trustme

from connector.config import ConfigError, load_config, parse_config

GOOD = """
retry:
  schedule: [500ms, 5s, 1m]
  max_age: 2h
  jitter: 0.1
endpoints:
  - name: crm
    url: https://hooks.example.com/fleetgate
    auth:
      basic: {username: fleet, password: "${CRM_PASSWORD}"}
    headers:
      X-Device: "[IMEI]"
      X-Literal: "$${NOT_EXPANDED}"
    tls: {verify: true, ca_file: ca.pem, cert_file: client.pem, key_file: client.key}
    secrets: ["${SECRET_NEW}", "${SECRET_OLD}"]
    filter:
      types: [file.stored]
      imeis: ["012896001234567"]
      cameras: [dualcam, dsm]
      media: [photo]
    timeout_seconds: 5
    max_concurrency: 4
    rate_limit_per_second: 2.5
    circuit_breaker: {failures: 3, open_seconds: 1m}
  - name: backup_2
    url: http://127.0.0.1:8080/hook
    auth: {bearer: "${TOKEN}"}
    allow_private_network: true
    enabled: false
"""

SECRET_NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
SECRET_OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()


def _client_cert(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert = ca.issue_cert("fleetgate-client")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))


def test_a_full_config_loads_with_env_references(tmp_path: Path) -> None:
    _client_cert(tmp_path)
    (tmp_path / "connector.yaml").write_text(GOOD)
    env = {"CRM_PASSWORD": "pa:ss", "TOKEN": "abc", "SECRET_NEW": SECRET_NEW}
    config = load_config(tmp_path / "connector.yaml", env=env | {"SECRET_OLD": SECRET_OLD})
    assert config.retry.schedule == [0.5, 5, 60] and config.retry.max_age == 7200
    assert config.retry.topics[0] == "fleetgate.connector.retry.500ms.v1"
    crm, backup = config.endpoints
    assert crm.auth is not None and crm.auth.basic is not None
    assert crm.auth.basic.password.get_secret_value() == "pa:ss"
    assert "pa:ss" not in repr(config)  # secrets stay out of logs and tracebacks
    assert crm.headers == {"X-Device": "[IMEI]", "X-Literal": "${NOT_EXPANDED}"}
    assert crm.tls.ca_file == tmp_path / "ca.pem"  # relative to the config file
    assert crm.tls.cert_file == tmp_path / "client.pem"
    assert [s.get_secret_value() for s in crm.secrets] == [SECRET_NEW, SECRET_OLD]
    assert SECRET_NEW not in repr(config)
    assert crm.timeout_seconds == 5 and crm.max_concurrency == 4
    assert crm.rate_limit_per_second == 2.5
    assert (crm.circuit_breaker.failures, crm.circuit_breaker.open_seconds) == (3, 60)
    assert crm.accepts("file.stored", "012896001234567", "dsm", "photo")
    assert not crm.accepts("file.failed", "012896001234567", "dsm", "photo")
    assert not crm.accepts("file.stored", "012896001234568", "dsm", "photo")
    assert not crm.accepts("file.stored", "012896001234567", "adas", "photo")
    assert not crm.accepts("file.stored", "012896001234567", "dsm", "video")
    assert crm.allow_private_network is False
    assert backup.auth is not None and backup.auth.bearer is not None
    assert backup.auth.bearer.get_secret_value() == "abc"
    assert backup.tls.verify is True and backup.timeout_seconds == 10
    assert backup.secrets == [] and backup.max_concurrency == 10
    assert backup.rate_limit_per_second is None
    assert (backup.circuit_breaker.failures, backup.circuit_breaker.open_seconds) == (5, 30)
    assert backup.accepts("file.failed", "1", "unknown", "unknown")  # no filter: everything
    assert [e.name for e in config.enabled] == ["crm"]


def _endpoint(**fields: object) -> str:
    lines = ["endpoints:", "  - name: a", "    url: http://hooks.example.com/hook"]
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
        (_endpoint(tls="{cert_file: /no/such/c.pem}"), "cert_file '/no/such/c.pem' is not"),
        (_endpoint(tls="{key_file: k.pem}"), "'key_file' and 'key_password' need 'cert_file'"),
        (_endpoint(secrets="[abc]"), "a signing secret is 'whsec_' followed by base64"),
        (_endpoint(secrets="[whsec_not*base64]"), "a signing secret is 'whsec_'"),
        (_endpoint(secrets="[whsec_c2hvcnQ=]"), "must hold 24 to 64 bytes, this one has 5"),
        (
            _endpoint(filter="{types: [file.deleted]}"),
            "endpoints[0].filter.types[0] (endpoint 'a'): Input should be",
        ),
        (_endpoint(filter="{cameras: [gopro]}"), "endpoints[0].filter.cameras[0]"),
        (_endpoint(filter="{media: []}"), "endpoints[0].filter.media"),
        (_endpoint(filter="{imeis: [12896001234567]}"), "quote the IMEIs"),
        (_endpoint(filter="{colour: [red]}"), "filter.colour (endpoint 'a'): Extra inputs"),
        (_endpoint(max_concurrency="0"), "endpoints[0].max_concurrency"),
        (_endpoint(rate_limit_per_second="0"), "endpoints[0].rate_limit_per_second"),
        (_endpoint(circuit_breaker="{open_seconds: soon}"), "not a duration: 'soon'"),
        # SSRF: private, loopback and link-local destinations need an explicit opt-in.
        (
            _endpoint(url="http://127.0.0.1:8080/hook"),
            "url: 127.0.0.1 is a loopback address; set 'allow_private_network: true'",
        ),
        (
            _endpoint(url="http://169.254.169.254/latest/meta-data/"),
            "url: 169.254.169.254 is a link-local address",
        ),
        (_endpoint(url="http://10.0.4.7/in"), "url: 10.0.4.7 is a private address"),
        (_endpoint(url="http://[::1]:8080/"), "url: ::1 is a loopback address"),
        ("retry: {schedule: []}\nendpoints: [{name: a, url: 'http://x/'}]\n", "retry.schedule"),
        (
            "retry: {schedule: [5s, 5s]}\nendpoints: [{name: a, url: 'http://x/'}]\n",
            "the steps must grow",
        ),
        (
            "retry: {schedule: [0.0001]}\nendpoints: [{name: a, url: 'http://x/'}]\n",
            "a positive whole number of ms",
        ),
        (
            "retry: {schedule: [1m], max_age: 5s}\nendpoints: [{name: a, url: 'http://x/'}]\n",
            "max_age is shorter than the first retry step",
        ),
        ("retry: {jitter: 1.5}\nendpoints: [{name: a, url: 'http://x/'}]\n", "retry.jitter"),
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


def test_private_destinations_are_allowed_when_the_endpoint_says_so() -> None:
    config = parse_config(
        "endpoints:\n  - name: lab\n    url: http://127.0.0.1:8080/hook\n"
        "    allow_private_network: true\n"
    )
    assert config.endpoints[0].allow_private_network


def test_a_client_key_that_does_not_match_is_refused_at_load(tmp_path: Path) -> None:
    _client_cert(tmp_path)
    other = trustme.CA().issue_cert("someone-else")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    text = _endpoint(tls="{cert_file: client.pem, key_file: other.key}")
    with pytest.raises(ConfigError, match="cannot use the client certificate"):
        parse_config(text, "connector.yaml", env={}, base=tmp_path)
