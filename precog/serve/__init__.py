"""``precog serve``: synchronous scoring over HTTP with the streaming worker's pieces.

:mod:`~precog.serve.scoring` is the one scoring layer, :mod:`~precog.serve.app` its two
front ends (Open Inference Protocol V2 and ``/v1/score``), :mod:`~precog.serve.schema` the
HTTP shapes derived from the event's Avro schema, :mod:`~precog.serve.auth` the API keys.
docs/serving.md describes the endpoints, docs/scoring.md the state semantics.
"""
