"""spectral: keep the first components of a fixed orthonormal basis, drop the rest, optionally noise
what is kept (the Gaussian mechanism on the kept coordinates).

Bases: `pca`, the principal directions of the auxiliary corpus's clean vectors (fitted once, an
artifact pinned by hash: `audits.transforms.fitting`), or `dct`, the orthonormal DCT-II of the
coordinates (fixed: nothing to fit). Dropping components alone is not a guarantee; with `epsilon`
the kept part is released through the analytic Gaussian mechanism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from audits.dp import Guarantee, analytic_gaussian_sigma
from audits.transforms.base import FitMaterial, NoiseModel
from audits.transforms.basic import _noisy_norm_range
from audits.transforms.fitting import TransformArtifactError, load

BASES = ("pca", "dct")
MIN_FIT = 100   # texts a pca basis is fitted on, at least


@dataclass(frozen=True, kw_only=True)
class Spectral:
    """Coordinates of the input in a fixed orthonormal basis, the first `keep` kept (output_dimension
    = keep), rescaled to the input's norm; with `epsilon`, inputs clipped to `clip_norm` first and
    analytic Gaussian noise (Balle & Wang 2018) for (epsilon, delta) added to the kept coordinates.

    * pca: x - mean projected onto the top `keep` principal directions (orthonormal, by variance).
      Centring drops the component every embedding shares (the corpus mean, about 0.43 of a unit
      MiniLM vector), which tells no text from another but would take a share of the norm.
    * dct: the first `keep` coefficients of scipy.fft.dct(x, norm="ortho").

    Rescaled: the kept coordinates y are scaled to |y| = |x| (|x| <= clip_norm once clipped; y = 0,
    which no real input gives, becomes |x| e_1). Without noise cosine similarity is unchanged by
    it; with noise every text keeps its whole norm as signal against the same sigma, instead of
    the share its kept components happen to carry. On 200 paraphrase pairs at epsilon 100 (keep 16,
    MiniLM) recall@10 is about 0.81 rescaled and centred vs 0.40 as a plain projection. Privacy
    does not rest on the basis: with epsilon every output before noise has norm <= clip_norm, so
    any two are at most 2 * clip_norm apart, the sensitivity stated, whatever the artifact holds.
    And sample validation can be narrow: a unit input comes out with norm exactly 1 (without
    noise) or min(1, clip_norm) plus the noise of `keep` coordinates, where a plain projection
    could have any norm in [0, 1].

    Output in the kept coordinates, not mapped back to the input space: mapping back by an
    orthonormal basis keeps every inner product, so cosine retrieval is the same at keep / d of
    the storage. Noise is added to the kept coordinates only.
    """

    keep: int
    basis: str = "pca"
    epsilon: float | None = None
    delta: float = 1e-5
    clip_norm: float = 1.0
    artifact: str = ""
    sha256: str = ""
    name: str = "spectral"

    fitted: ClassVar[bool] = True
    fit_parameters: ClassVar[tuple[str, ...]] = ("basis",)

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"spectral.basis must be 'pca' or 'dct', got {self.basis!r}")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int | np.integer) or self.keep < 1:
            raise ValueError(f"spectral.keep must be an integer >= 1, got {self.keep!r}")
        if self.epsilon is not None and not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"spectral.epsilon must be a finite number > 0 (or unset: no noise), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"spectral.delta must be in (0, 1), got {self.delta}")
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ValueError(f"spectral.clip_norm must be a finite number > 0, got {self.clip_norm}")
        if self.basis == "dct" and (self.artifact or self.sha256):
            raise ValueError("spectral.artifact: the dct basis is fixed and takes no artifact (only pca is fitted)")
        if bool(self.artifact) != bool(self.sha256):
            raise ValueError("spectral.artifact and spectral.sha256: give both (as fitting writes them), or neither")

    # -- fitting (audits.transforms.fitting) -----------------------------------------------------

    @classmethod
    def fits(cls, spec: Any) -> bool:
        """Only the pca basis is learnt; dct is fixed."""
        return spec.get("basis", "pca") == "pca"

    @classmethod
    def fit(cls, params: Any, material: FitMaterial) -> dict[str, np.ndarray]:
        """The principal directions of the material's clean vectors (centred): `components` (rows
        orthonormal, by decreasing variance; min(n, d) of them), `mean`, `variance` per component."""
        clean = np.asarray(material.clean, dtype=np.float64)
        if clean.ndim != 2 or len(clean) < MIN_FIT:
            raise ValueError(f"spectral: a pca basis needs at least {MIN_FIT} texts to fit on (from fewer its "
                             f"components are those texts' own vectors), got shape {clean.shape}")
        mean = clean.mean(axis=0)
        _, singular, vt = np.linalg.svd(clean - mean, full_matrices=False)
        # SVD signs are arbitrary: fix each direction's largest coordinate positive, for a stable artifact.
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
        vt *= np.where(signs == 0, 1.0, signs)[:, None]
        return {"components": vt.astype(np.float32), "mean": mean.astype(np.float32),
                "variance": (singular**2 / (len(clean) - 1)).astype(np.float32)}

    @cached_property
    def basis_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(components, mean) of the pca basis, loaded once from the pinned artifact."""
        arrays = load(self.name, self.artifact, self.sha256)
        components, mean = arrays.get("components"), arrays.get("mean")
        if (components is None or mean is None or components.ndim != 2 or mean.ndim != 1
                or components.shape[1] != mean.shape[0]):
            raise TransformArtifactError(f"transform spectral: artifact {self.artifact} is not a pca basis "
                                         "(needs `components` rows x d and `mean` of d)")
        return components.astype(np.float64), mean.astype(np.float64)

    # -- the transform -------------------------------------------------------------------------

    @cached_property
    def sigma(self) -> float | None:
        if self.epsilon is None:
            return None
        return analytic_gaussian_sigma(self.epsilon, self.delta, self.sensitivity)

    @property
    def sensitivity(self) -> float:
        return 2 * self.clip_norm

    def _kept(self, x: np.ndarray) -> np.ndarray:
        dimension = x.shape[1]
        if self.keep > dimension:
            raise ValueError(f"spectral.keep={self.keep} exceeds the input dimension {dimension}: "
                             f"at most {dimension} components exist")
        if self.basis == "dct":
            from scipy.fft import dct

            return dct(x, type=2, norm="ortho", axis=1)[:, :self.keep]
        components, mean = self.basis_arrays
        if components.shape[1] != dimension:
            raise ValueError(f"spectral: the pca basis in {self.artifact} was fitted on {components.shape[1]}-"
                             f"dimensional vectors, got {dimension}")
        if self.keep > len(components):
            raise ValueError(f"spectral.keep={self.keep} exceeds the {len(components)} components of the pca basis "
                             f"in {self.artifact} (fit it on more texts, or keep fewer)")
        return (x - mean) @ components[:self.keep].T

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"spectral: expected a 2-d array of vectors, got shape {x.shape}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if self.epsilon is not None:   # clip to clip_norm
            x = x * np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-12))
            norms = np.minimum(norms, self.clip_norm)
        kept = self._kept(x)
        length = np.linalg.norm(kept, axis=1, keepdims=True)
        fallback = np.zeros_like(kept)
        fallback[:, 0] = 1.0
        direction = np.where(length > 1e-12, kept / np.maximum(length, 1e-12), fallback)
        out = (direction * norms).astype(np.float32)
        if self.sigma is not None:
            out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(self.sigma)
        return out

    def guarantee(self) -> Guarantee | None:
        if self.epsilon is None or self.sigma is None:
            return None   # dropping components hides something, but bounds nothing
        return Guarantee("gaussian", self.epsilon, self.delta, self.sensitivity, self.sigma)

    def noise_model(self, dimension: int) -> NoiseModel | None:
        return None if self.sigma is None else NoiseModel(self.sigma**2)

    def output_dimension(self, dimension: int) -> int:
        return self.keep

    def norm_range(self, dimension: int) -> tuple[float, float]:
        # Rescaled to the (clipped) input's norm: exactly min(1, clip_norm) before noise for unit input.
        if self.sigma is None:
            return 1 - 1e-3, 1 + 1e-3
        return _noisy_norm_range(self.keep, min(self.clip_norm, 1.0), self.sigma)
