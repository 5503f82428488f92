"""The promotion policy's false-promotion rate and power on seeded labels (docs/lifecycle.md).

Run from the checkout: ``.venv/bin/python scripts/lifecycle_error_rates.py`` (about a minute).
The labels come from the generator of ``tests/unit/test_lifecycle_policy.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from test_lifecycle_policy import NOW, POLICY, _records, _roles, _window  # noqa: E402

from precog.lifecycle.policy import decide  # noqa: E402


def promoted(policy, seed: int, n: int, edge: float) -> bool:
    window = _window(_records(seed, n, edge=edge))
    return decide(policy, _roles(), window, now_ms=NOW).action == "promote"


def main() -> None:
    for test in ("bootstrap", "mcnemar"):
        p = POLICY.model_copy(update={"test": test, "bootstrap_samples": 500, "min_labels": 100})
        false = sum(promoted(p, 1000 + s, 1000, 0.0) for s in range(200))
        power = {n: sum(promoted(p, 3000 + s, n, 0.3) for s in range(50))
                 for n in (500, 1000, 2000)}
        print(f"{test}: equal models promoted {false}/200; better (edge 0.3) promoted"
              f" {', '.join(f'{v}/50 on {n}' for n, v in power.items())}")


if __name__ == "__main__":
    main()
