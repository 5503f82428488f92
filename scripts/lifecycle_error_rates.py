"""The promotion policy's false-promotion rate and power on seeded labels (docs/lifecycle.md).

Run from the checkout: ``.venv/bin/python scripts/lifecycle_error_rates.py`` (about a minute).
"""
import sys

sys.path.insert(0, "tests/unit")
from test_lifecycle_policy import _records, _roles, _window, POLICY, NOW
from precog.lifecycle.policy import decide
for test in ("bootstrap", "mcnemar"):
    p = POLICY.model_copy(update={"test": test, "bootstrap_samples": 500})
    f = sum(decide(p, _roles(), _window(_records(1000 + s, 1000, edge=0.0)), now_ms=NOW).action == "promote" for s in range(200))
    t = {}
    for n in (500, 1000, 2000):
        t[n] = sum(decide(p.model_copy(update={"min_labels": 100}), _roles(), _window(_records(3000 + s, n, edge=0.3)), now_ms=NOW).action == "promote" for s in range(50))
    print(test, "false", f, "/200", "true(edge .3)", t, "/50")
