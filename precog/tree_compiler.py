"""A LightGBM text model compiled to native code (tl2cgen), used only where it is bit-for-bit
``Booster.predict``.

Treelite 4 reads the text model with float64 thresholds and leaf values; tl2cgen prints
every threshold with enough digits to parse back to the same double, sums the trees in
LightGBM's order into a double and applies the same sigmoid (``1 / (1 + exp(-a * x))``);
gcc compiles it with ``-std=c99`` (no FMA contraction) and ``-ffp-contract=off``. Two of
LightGBM's conventions it does not share, measured on 200k+ seeded rows per model
(docs/benchmarks.md, "A compiled LightGBM scorer"):

- LightGBM's dense-row reader drops every value with ``|x| <= kZeroThreshold`` (1e-35 as a
  float): such a value is scored as 0.0. The compiled code compares it as given, so 1e-36
  against a threshold of -1e-35 goes the other way. :meth:`CompiledTrees.predict` maps
  those values to 0.0 first, exactly as LightGBM does.
- tl2cgen's data reader takes +-DBL_MAX for missing (like NaN); LightGBM compares them as
  numbers (it differs where a tree splits at ``threshold=inf``). The few rows holding one
  are scored by the Booster.
- ``zero_as_missing`` splits (missing type ``Zero``) send 0 to the default side in LightGBM
  only (dmlc/tl2cgen#8), and categorical splits differ for negative or NaN categories:
  models with either are not compiled (:func:`unsupported`).

Every library is checked at load time on a seeded probe batch built from the model's own
thresholds (each threshold, its neighbours one ulp away, NaN, +-0, +-inf, +-1e-35 and
denormals) and used only if it equals ``Booster.predict`` on the float64 bits; anything
else (no gcc, no tl2cgen, a compile error, a difference) leaves the Booster in place with
one logged warning.

The cache: ``<cache>/<artifact sha256>-<build key>/`` holds ``model.so`` and
``manifest.json`` (artifact and library SHA-256, tool versions). An entry is used only
when the manifest names this artifact and the library's SHA-256 matches it; a mismatched
entry is rebuilt. The hash detects a corrupted, truncated or swapped library; it is no
defence against someone who can write the cache directory (they could rewrite both), so
the directory is created ``0700`` and entries owned by another user or writable by group
or others are refused. No pickle: the manifest is JSON, the library is what gcc wrote.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("precog.models")

#: LightGBM's ``kZeroThreshold`` (``1e-35f``): dense input values at most this far from 0
#: are read as 0.0
KZERO = float(np.float32(1e-35))
DBL_MAX = float(np.finfo(np.float64).max)
#: tl2cgen's code generation: trees quantized to bin indices (the comparisons stay exact
#: double comparisons against the thresholds; 1.4x faster than plain compares on the demo
#: leader), split into translation units that gcc compiles two at a time
_PARAMS = {"quantize": 1, "parallel_comp": 8}
_CC_OPTIONS = ["-ffp-contract=off"]
_LIBRARY = "model.so"
_MANIFEST = "manifest.json"
_PROBE_ROWS = 2048


class CompileUnavailable(Exception):
    """Why a model is scored by the Booster instead (the message is logged)."""


def unsupported(model_text: str) -> str | None:
    """Why the text model cannot be compiled exactly, or None.

    >>> unsupported("tree\\nobjective=binary sigmoid:1\\ndecision_type=2 10 0\\n") is None
    True
    >>> unsupported("tree\\nobjective=binary sigmoid:1\\ndecision_type=1 2\\n")
    'categorical splits'
    >>> unsupported("tree\\nobjective=binary sigmoid:1\\ndecision_type=4 2\\n")
    'zero_as_missing splits'
    """
    objective = ""
    for line in model_text.splitlines():
        if line.startswith("objective="):
            objective = line.split("=", 1)[1]
        elif line.startswith("decision_type="):
            for value in line.split("=", 1)[1].split():
                kind = int(value)
                if kind & 1:
                    return "categorical splits"
                if (kind >> 2) & 3 == 1:
                    return "zero_as_missing splits"
        elif line.startswith("is_linear=") and line.strip() != "is_linear=0":
            return "linear trees"
        elif line.startswith("num_class=") and line.strip() != "num_class=1":
            return "more than one class"
    if not objective.startswith("binary"):
        return f"objective {objective or '?'} (only binary)"
    return None


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@lru_cache(maxsize=1)
def build_key() -> str:
    """What a compiled library depends on besides the artifact: the tools, gcc, the options."""
    import tl2cgen
    import treelite

    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True,
                         check=True).stdout.strip()
    text = json.dumps({"tl2cgen": tl2cgen.__version__, "treelite": treelite.__version__,
                       "gcc": gcc, "params": _PARAMS, "options": _CC_OPTIONS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_owner(path)


def _check_owner(path: Path) -> None:
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise CompileUnavailable(f"{path} is owned by another user or writable by others")


@dataclass
class CompiledTrees:
    """A verified compiled library and its predictors (one per thread count); rows holding
    +-DBL_MAX are scored by ``booster`` (tl2cgen's reader takes those values for missing)."""

    library: Path
    sha256: str
    booster: Any = field(default=None, repr=False)
    _predictors: dict[int, Any] = field(default_factory=dict, repr=False)

    def _predictor(self, num_threads: int) -> Any:
        p = self._predictors.get(num_threads)
        if p is None:
            import tl2cgen

            p = tl2cgen.Predictor(str(self.library), nthread=num_threads or None)
            self._predictors[num_threads] = p
        return p

    def predict(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Probabilities of ``X`` (float64, C order), as ``Booster.predict`` gives them."""
        import tl2cgen

        size = np.abs(X)
        # LightGBM reads these as 0.0; C order for the library whatever the caller's layout
        Z = np.ascontiguousarray(np.where(size <= KZERO, 0.0, X))
        out = self._predictor(num_threads).predict(tl2cgen.DMatrix(Z, dtype="float64"))
        out = np.ascontiguousarray(np.asarray(out, dtype=np.float64).reshape(-1))
        extreme = (size == DBL_MAX).any(axis=1)
        if extreme.any():  # tl2cgen reads +-DBL_MAX as missing, LightGBM as a number
            rows = np.ascontiguousarray(X[extreme], dtype=np.float64)
            out[extreme] = self.booster.predict(rows, num_threads=num_threads)
        return out


def split_points(model_text: str) -> tuple[int, dict[int, np.ndarray]]:
    """The number of features and each feature's split thresholds, read from the text model
    (LightGBM prints them with 17 digits, so they parse back to the same doubles).

    >>> n, t = split_points("max_feature_idx=2\\nsplit_feature=2 0 2\\nthreshold=1.5 -1 0.25\\n")
    >>> n, {k: v.tolist() for k, v in sorted(t.items())}
    (3, {0: [-1.0], 2: [0.25, 1.5]})
    """
    nf, features = 0, []
    found: dict[int, list[float]] = {}
    for line in model_text.splitlines():
        if line.startswith("max_feature_idx="):
            nf = int(line.split("=", 1)[1]) + 1
        elif line.startswith("split_feature="):
            features = [int(v) for v in line.split("=", 1)[1].split()]
        elif line.startswith("threshold="):
            for j, t in zip(features, line.split("=", 1)[1].split(), strict=True):
                found.setdefault(j, []).append(float(t))
    return nf, {j: np.unique(np.array(t, dtype=np.float64)) for j, t in found.items()}


def probe_rows(model_text: str, seed: int = 20261202, n: int = _PROBE_ROWS) -> np.ndarray:
    """Seeded rows that reach every split's edge: each threshold, one ulp either side, and
    NaN, +-0, +-inf, +-1e-35, 1e-36, denormals and +-DBL_MAX mixed with normal values."""
    rng = np.random.default_rng(seed)
    nf, edges = split_points(model_text)
    special = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, KZERO, -KZERO, 1e-36, -1e-36,
                        5e-324, -5e-324, DBL_MAX, -DBL_MAX, 1.0, -1.0])
    X = rng.normal(0.0, 3.0, (n, nf))
    for j in range(nf):
        t = edges.get(j, np.empty(0))
        pool = np.concatenate([special, t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)])
        mask = rng.random(n) < 0.7
        X[mask, j] = rng.choice(pool, int(mask.sum()))
    return X


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """The same float64 values, bit for bit (NaN payloads and the sign of zero included)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _compile(model_text: str, entry: Path, artifact_sha256: str) -> None:
    """Compile into a fresh directory beside ``entry``, then move it into place."""
    import tl2cgen
    import treelite

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=entry.parent))
    try:
        src = tmp / "model.txt"
        src.write_text(model_text, encoding="utf-8")
        model = treelite.frontend.load_lightgbm_model(str(src))
        tl2cgen.export_lib(model, toolchain="gcc", libpath=str(tmp / _LIBRARY), params=_PARAMS,
                           nthread=2, options=_CC_OPTIONS)
        src.unlink()
        manifest = {"artifact_sha256": artifact_sha256, "library_sha256":
                    _file_sha256(tmp / _LIBRARY), "tl2cgen": tl2cgen.__version__,
                    "treelite": treelite.__version__, "params": _PARAMS,
                    "options": _CC_OPTIONS}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for path, mode in ((tmp / _LIBRARY, 0o500), (tmp / _MANIFEST, 0o400), (tmp, 0o700)):
            path.chmod(mode)  # whatever the umask: private, and refused if that changes
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verified_library(entry: Path, artifact_sha256: str) -> tuple[Path, str] | None:
    """The entry's library when its manifest names this artifact and its hash matches."""
    try:
        manifest = json.loads((entry / _MANIFEST).read_text(encoding="utf-8"))
        _check_owner(entry)
        _check_owner(entry / _LIBRARY)
        found = _file_sha256(entry / _LIBRARY)
    except (OSError, ValueError):
        return None
    if manifest.get("artifact_sha256") != artifact_sha256 or manifest.get(
            "library_sha256") != found:
        log.warning("compiled LightGBM cache entry %s does not match its manifest; rebuilding",
                    entry)
        return None
    return entry / _LIBRARY, found


def load_compiled(booster: Any, model_text: str, cache_dir: Path) -> CompiledTrees:
    """The verified compiled scorer of ``model_text``, from the cache or compiled now.

    Raises :class:`CompileUnavailable` when it cannot be had or is not exact.
    """
    reason = unsupported(model_text)
    if reason:
        raise CompileUnavailable(f"not compiled: {reason}")
    if shutil.which("gcc") is None:
        raise CompileUnavailable("no gcc on PATH")
    try:
        import tl2cgen  # noqa: F401
        import treelite  # noqa: F401
    except ImportError as exc:
        raise CompileUnavailable(f"tl2cgen/treelite not installed ({exc})") from None
    artifact_sha256 = hashlib.sha256(model_text.encode("utf-8")).hexdigest()
    entry = cache_dir / f"{artifact_sha256}-{build_key()}"
    try:  # e.g. a read-only root file system with no volume at the cache (docs/models.md)
        _private_dir(cache_dir)
        lock = open(cache_dir / f"{entry.name}.lock", "w")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise CompileUnavailable(f"the cache {cache_dir} is not usable ({exc}); set"
                                 " PRECOG_LIGHTGBM_CACHE to a writable directory") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one compile per entry across processes
        found = _verified_library(entry, artifact_sha256)
        if found is None:
            try:
                _compile(model_text, entry, artifact_sha256)
            except Exception as exc:  # a compiler or tool failure: the Booster scores
                raise CompileUnavailable(f"compile failed: {exc}") from None
            found = _verified_library(entry, artifact_sha256)
            if found is None:
                raise CompileUnavailable(f"{entry} does not verify after compiling")
    compiled = CompiledTrees(*found, booster=booster)
    X = probe_rows(model_text)
    if not bits_equal(compiled.predict(X), booster.predict(X, num_threads=1)):
        raise CompileUnavailable("compiled output differs from Booster.predict on the probe")
    return compiled
