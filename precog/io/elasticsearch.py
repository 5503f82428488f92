"""Elasticsearch clients from ``settings.elasticsearch`` (URL, credentials, TLS, timeout)."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch, Elasticsearch

from precog.settings import Settings


def elasticsearch_client(settings: Settings, **overrides: Any) -> Elasticsearch:
    """A client of ``settings.elasticsearch``; ``overrides`` replace its keyword arguments."""
    return Elasticsearch(**{**settings.elasticsearch.client_kwargs(), **overrides})


def async_elasticsearch_client(settings: Settings, **overrides: Any) -> AsyncElasticsearch:
    """The asyncio twin of :func:`elasticsearch_client`."""
    return AsyncElasticsearch(**{**settings.elasticsearch.client_kwargs(), **overrides})
