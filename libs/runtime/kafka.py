"""Kafka client settings every service shares, and the aiokafka/faust arguments made from them.

Managed clusters (Strimzi, MSK, Confluent) want TLS, often with a client certificate, and SASL
(PLAIN or SCRAM). Every producer, consumer and admin client of fleetgate is built with
:func:`client_kwargs` / :func:`producer_kwargs`, and the assembler's faust app with
:func:`faust_app`, so one set of ``FLEETGATE_KAFKA_*`` variables configures them all.

Producers are idempotent by default (no duplicate or reordered batch when a send is retried
after a broker failover). The embedded Tansu broker cannot do it: ``fleetgate devstack`` turns
it off for its children itself (``FLEETGATE_KAFKA_ENABLE_IDEMPOTENCE=false``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import faust

__all__ = [
    "KafkaSettings",
    "client_kwargs",
    "consumer_kwargs",
    "faust_app",
    "partitions_of",
    "producer_kwargs",
    "ssl_context",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseSettings):
    """``FLEETGATE_KAFKA_*``: where Kafka is and how to authenticate to it."""

    model_config = SettingsConfigDict(env_prefix="FLEETGATE_", extra="ignore")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port"
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM of the CA that signed the brokers' certificates; none: system CAs"
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (chain), for brokers that require one"
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of an encrypted client key"
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="check that a broker's certificate names the host connected to"
    )
    kafka_enable_idempotence: bool = Field(
        True, description="idempotent producers (turn off only for a broker without them)"
    )
    kafka_fetch_max_wait_ms: int = Field(
        500,
        description="longest a broker may hold a fetch with no records (Apache Kafka answers "
        "as soon as records arrive; Tansu holds it whole, so devstack sets 100 for Tansu)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs "
                "kafka_sasl_username and kafka_sasl_password"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        return self

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of every connection to Kafka (None: plaintext)."""
    if not settings.kafka_tls:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            password.get_secret_value() if password else None,
        )
    return context


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Arguments for any aiokafka client (producer, consumer, admin): servers and security."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked by the validator
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return kwargs


def consumer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """:func:`client_kwargs` plus the consumer's fetch wait as configured."""
    return client_kwargs(settings) | {"fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms}


def producer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """:func:`client_kwargs` plus ``acks=all`` and idempotence as configured."""
    return client_kwargs(settings) | {
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
    }


async def partitions_of(consumer: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` (empty: no such topic), fetched from the brokers now.

    ``consumer.topics()`` then ``consumer.partitions_for_topic()`` is not that: ``topics()``
    does not keep the metadata it fetched, and a real Kafka answers the consumer's own refresh
    only for the topics it tracks (Tansu answers with every topic, hiding the difference).
    """
    cluster = await consumer._client.fetch_all_metadata()
    return set(cluster.partitions_for_topic(topic) or ())


def faust_app(settings: KafkaSettings, app_id: str, **options: Any) -> faust.App:
    """A faust app on the configured brokers, with their security, when enabled an
    idempotent producer (faust turns idempotence on only inside its own transactions), and
    the configured fetch wait (faust fixes its consumer's at 1.5 s, which Tansu holds whole:
    a record arriving on an idle partition waited up to that long)."""
    import faust
    from faust.transport.drivers import aiokafka as driver
    from faust.transport.drivers.aiokafka import Producer

    context = ssl_context(settings)
    credentials: Any = None
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")]
    idempotent = settings.kafka_enable_idempotence

    class IdempotentProducer(Producer):
        def _settings_extra(self) -> dict[str, Any]:
            return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}

    fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # faust passes no fetch wait of ours; aiokafka hands this one to its fetcher at
            # start() (checked by tests/assembler/test_faust_settings.py).
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WaitingConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = WaitingConsumer

    class App(faust.App):
        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

        def _new_producer(self) -> Any:
            if not idempotent:
                return super()._new_producer()
            return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)

    return App(app_id, broker=brokers, broker_credentials=credentials, **options)
