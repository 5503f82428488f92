"""Kibana saved objects and index templates, shipped as package data (precog.resources)."""
