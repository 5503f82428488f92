"""Old name of :mod:`precog.services.model_control`, kept until its last importers move.

``precog/replay/runner.py`` and ``precog/bench/`` still import ``precog.services.control``;
they are being rewritten in another change (issue 13, step 3). Import
:mod:`precog.services.model_control` instead; delete this module once nothing imports it.
"""

from precog.services.model_control import publish_roles, read_roles

__all__ = ["publish_roles", "read_roles"]
