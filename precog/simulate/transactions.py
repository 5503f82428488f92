"""Card transactions with learnable fraud bursts, and their concept and data drift.

Cards with their own spending profiles (typical amount, home country, category mix, online
propensity, activity), merchants with a category and a country, a diurnal arrival rate in
history, and fraud in bursts on compromised cards: online/foreign, new merchants, amounts
far above the card's profile, uniform over the day (so relatively more at night). After
``concept_drift_at`` the fraud looks like card-present skimming instead: domestic, point of
sale, the card's usual categories and near-usual amounts; only the burst and the new
merchants remain.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any

from precog.simulate.config import HOUR, MINUTE, SimConfig
from precog.simulate.simulator import DIURNAL, Simulator, cumulative, weighted
from precog.spec import PipelineSpec

CATEGORIES = ["grocery", "fuel", "restaurant", "travel", "electronics", "fashion",
              "entertainment", "cash", "digital", "health"]
_CATEGORY_POPULARITY = [0.26, 0.12, 0.14, 0.03, 0.04, 0.08, 0.06, 0.06, 0.12, 0.09]
_CATEGORY_FACTOR = {"grocery": 1.0, "fuel": 1.3, "restaurant": 0.9, "travel": 5.0,
                    "electronics": 3.5, "fashion": 1.8, "entertainment": 0.8, "cash": 2.0,
                    "digital": 0.35, "health": 1.0}
HOME_COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "GB", "PL", "SE", "US"]
_HOME_WEIGHTS = [0.30, 0.15, 0.10, 0.10, 0.10, 0.08, 0.07, 0.05, 0.05]
FRAUD_COUNTRIES = ["US", "BR", "NG", "RO", "CN", "TR", "MX", "UA"]
_FRAUD_ONLINE = ["electronics", "digital", "travel", "fashion"]
_FRAUD_ONLINE_W = [0.4, 0.3, 0.15, 0.15]


@dataclass
class _Card:
    typical: float
    home: str
    online_p: float
    categories: list[float]  # cumulative weights over CATEGORIES
    favourites: list[int]


class TransactionSimulator(Simulator):
    """Card transactions with learnable fraud bursts (see the module docstring).

    The entities are cards (2000 unless ``config.entities``), shopping at ``n_merchants``
    merchants; ``config.positive_rate`` is the fraud rate.

    >>> sim = TransactionSimulator(SimConfig(seed=1, entities=50), n_merchants=40)
    >>> [e.record["card_id"] for e in sim.events(3)]
    ['card-000009', 'card-000041', 'card-000004']
    """

    name = "transactions"
    schema_name = "transaction"
    default_entities = 2000
    drift_features = ("amount", "country", "channel")
    _BURST_MAX = 6  # a compromised card sees 1..6 fraudulent transactions

    def __init__(self, config: SimConfig, spec: PipelineSpec | None = None, *,
                 n_merchants: int = 500) -> None:
        super().__init__(config, spec)
        rng = self.rng
        self.merchants = self._make_merchants(rng, n_merchants)
        self.cards = [self._make_card(rng) for _ in range(self.entities)]
        self._activity = cumulative([rng.gammavariate(2.0, 1.0) for _ in self.cards])
        burst_mean = (1 + self._BURST_MAX) / 2
        rate = config.positive_rate
        self._episode_p = rate / ((1 - rate) * burst_mean)
        self._t = config.start_ms
        self._next_legit = config.start_ms + self._gap(config.start_ms)
        self._fraud: list[tuple[int, int, int, int]] = []  # (time, seq, card, n-th in burst)
        self._seq = 0

    def _make_merchants(self, rng: random.Random, n: int) -> list[tuple[str, str, str]]:
        merchants = []
        cum_home, cum_cat = cumulative(_HOME_WEIGHTS), cumulative(_CATEGORY_POPULARITY)
        for j in range(n):
            if rng.random() < 0.85:
                country = HOME_COUNTRIES[weighted(rng, cum_home)]
            else:
                country = rng.choice(FRAUD_COUNTRIES)
            merchants.append((f"m-{j:05d}", CATEGORIES[weighted(rng, cum_cat)], country))
        self._by_country_cat: dict[tuple[str, str], list[int]] = {}
        self._by_country: dict[str, list[int]] = {}
        self._by_cat: dict[str, list[int]] = {}
        for j, (_, cat, country) in enumerate(merchants):
            self._by_country_cat.setdefault((country, cat), []).append(j)
            self._by_country.setdefault(country, []).append(j)
            self._by_cat.setdefault(cat, []).append(j)
        return merchants

    def _make_card(self, rng: random.Random) -> _Card:
        home = HOME_COUNTRIES[weighted(rng, cumulative(_HOME_WEIGHTS))]
        cats = [rng.gammavariate(p * 4.0, 1.0) + 1e-9 for p in _CATEGORY_POPULARITY]
        local = self._by_country.get(home) or list(range(len(self.merchants)))
        return _Card(
            typical=rng.lognormvariate(math.log(35.0), 0.6),
            home=home,
            online_p=rng.betavariate(2.0, 6.0),
            categories=cumulative(cats),
            favourites=[rng.choice(local) for _ in range(8)],
        )

    def _merchant(self, country: str, category: str) -> int:
        pool = (self._by_country_cat.get((country, category)) or self._by_cat.get(category)
                or self._by_country.get(country) or [0])
        return self.rng.choice(pool)

    def _next(self, index: int) -> tuple[dict[str, Any], int]:
        if self._fraud and self._fraud[0][0] <= self._next_legit:
            t, _, c, nth = heapq.heappop(self._fraud)
            self._t = max(self._t, t)
            return self._fraud_tx(index, c, nth), 1
        self._t = t = self._next_legit
        self._next_legit = t + self._gap(t)
        c = weighted(self.rng, self._activity)
        self._maybe_compromise(t)
        return self._legit_tx(index, c), 0

    def _maybe_compromise(self, t: int) -> None:
        p = self._episode_p
        if self.config.diurnal:  # episodes uniform over the day, legit traffic is not
            p /= DIURNAL[(t // HOUR) % 24]
        if self.rng.random() >= p:
            return
        victim = weighted(self.rng, self._activity)
        scale = self.config.burst_time_scale
        when = t + int(self.rng.expovariate(scale / (15 * MINUTE)))
        for nth in range(self.rng.randint(1, self._BURST_MAX)):
            self._seq += 1
            heapq.heappush(self._fraud, (when, self._seq, victim, nth))
            when += 1 + int(self.rng.expovariate(scale / (5 * MINUTE)))

    def _tx(self, c: int, m: int, channel: str, amount: float, category: str) -> dict[str, Any]:
        mid, _, country = self.merchants[m]
        return {"card_id": f"card-{c:06d}", "customer_id": f"cust-{c:06d}",
                "merchant_id": mid, "category": category, "amount": amount, "currency": "EUR",
                "country": country, "channel": channel, "event_time": self._t}

    def _amount(self, index: int, base: float, category: str, atm: bool) -> float:
        amount = base * _CATEGORY_FACTOR[category]
        if self._drifted(self.config.data_drift_at, index) and self.drift_feature \
                == "amount":
            amount *= 2.5
        if atm:
            return float(min(1000, max(20, round(amount / 20) * 20)))
        return round(min(49_000.0, max(0.5, amount)), 2)

    def _legit_tx(self, index: int, c: int) -> dict[str, Any]:
        rng, card, cfg = self.rng, self.cards[c], self.config
        drift = self._drifted(cfg.data_drift_at, index)
        travel_p = 0.35 if drift and self.drift_feature == "country" else 0.03
        online_p = min(0.95, card.online_p + (0.45 if drift and self.drift_feature
                                                == "channel" else 0.0))
        if rng.random() < 0.65:
            m = rng.choice(card.favourites)
            category = self.merchants[m][1]
        else:
            category = CATEGORIES[weighted(rng, card.categories)]
            m = self._merchant(card.home, category)
        if rng.random() < travel_p:
            away = rng.choice([x for x in HOME_COUNTRIES if x != card.home])
            m = self._merchant(away, category)
        if category == "cash":
            channel = "atm"
        elif category == "digital" or rng.random() < online_p:
            channel = "online"
        else:
            channel = "pos"
        base = card.typical * rng.lognormvariate(0.0, 0.5)
        return self._tx(c, m, channel, self._amount(index, base, category, channel == "atm"),
                        category)

    def _fraud_tx(self, index: int, c: int, nth: int) -> dict[str, Any]:
        rng, card = self.rng, self.cards[c]
        if self._drifted(self.config.concept_drift_at, index):  # skimming: card present
            category = CATEGORIES[weighted(rng, card.categories)]
            if category == "cash":
                category = "grocery"
            m = self._merchant(card.home, category)
            base = card.typical * rng.lognormvariate(math.log(1.3), 0.4)
            return self._tx(c, m, "pos", self._amount(index, base, category, False), category)
        u = rng.random()
        channel = "online" if u < 0.7 else ("atm" if u < 0.8 else "pos")
        if channel == "atm":
            category = "cash"
        elif channel == "online":
            category = _FRAUD_ONLINE[weighted(rng, cumulative(_FRAUD_ONLINE_W))]
        else:
            category = rng.choice(["electronics", "fashion"])
        country = rng.choice(FRAUD_COUNTRIES) if rng.random() < 0.7 else card.home
        m = self._merchant(country, category)
        if nth == 0 and rng.random() < 0.3:  # a small test charge first
            return self._tx(c, m, channel, round(rng.uniform(1.0, 5.0), 2), category)
        base = card.typical * rng.lognormvariate(math.log(3.5), 0.5)
        return self._tx(c, m, channel, self._amount(index, base, category, channel == "atm"),
                        category)

    def _impossible(self, record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        what = rng.choice(["negative_amount", "huge_amount", "channel", "country", "category"])
        if what == "negative_amount":
            record["amount"] = -abs(record["amount"])
        elif what == "huge_amount":
            record["amount"] = 1e7
        elif what == "channel":
            record["channel"] = rng.choice(["fax", "telex", "POS"])
        elif what == "country":
            record["country"] = rng.choice(["XXX", "de", "1A", ""])
        else:
            record["category"] = rng.choice(["weapons", "unknown", ""])
        return record
