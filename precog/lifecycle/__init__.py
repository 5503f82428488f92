"""The model lifecycle: choosing the leader from recent paired evidence.

``evidence`` (metrics on weighted events, the paired bootstrap, McNemar's test) and
``policy`` (the ``best-recent`` decision) are pure; ``controller`` reads the roles and the
joined labels from Kafka, records each decision and applies it.
"""
