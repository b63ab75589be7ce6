"""Low-dimensional embeddings of subframes, and simple classifiers on them.

Features of a prepared subframe (`blobwatch.subframes`) are either its pixels block-averaged
(``raw``: 256x256 -> 32x32) or the penultimate layer of the PaperCNN (``cnn``: the 128 ReLU
units before the last fully connected layer).  Standardized features are embedded by

- ``pca``  scikit-learn PCA, fitted on the training subframes, applied to the others;
- ``umap`` umap-learn (the ``research`` extra), fitted on the training subframes, applied to the
  others with its ``transform``;
- ``tsne`` scikit-learn t-SNE, which has no out-of-sample mapping: it embeds all subframes at once
  (no label is used), and only the training subframes' labels fit the classifier.

A classifier (logistic regression with balanced class weights, or distance-weighted kNN) is
fitted on the embedded training subframes; its blob probability ranks the others.  PCA with
either classifier is a fixed linear map plus a small model, stored without pickle
(`EmbeddingClassifier`), so it can run as a regression-suite detector.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.errors import InputError
from blobwatch.regression import Candidates, Case

__all__ = [
    "CLASSIFIERS",
    "FEATURES",
    "METHODS",
    "Embedding",
    "EmbeddingClassifier",
    "EmbeddingDetector",
    "FeatureSet",
    "best_storable",
    "case_features",
    "cnn_features",
    "embed",
    "fit_classifier",
    "raw_features",
    "score_ranking",
    "shipped_embedding_path",
    "study",
]

FEATURES = ("raw", "cnn")
METHODS = ("pca", "tsne", "umap")
CLASSIFIERS = ("logistic", "knn")
#: Block size of the raw features.
RAW_BLOCK = 8
FORMAT = "blobwatch-embedding-classifier/1"
#: File name of the embedding classifier shipped in ``blobwatch/data``.
SHIPPED_EMBEDDING = "embed_classifier.npz"


def shipped_embedding_path() -> Path:
    """Path of the embedding classifier shipped with the package."""
    return Path(str(resources.files("blobwatch") / "data" / SHIPPED_EMBEDDING))


def raw_features(subframes: np.ndarray, block: int = RAW_BLOCK) -> np.ndarray:
    """Block means ``(n, (size/block)**2)`` float32 of prepared subframes ``(n, size, size)``."""
    x = np.asarray(subframes, np.float32)
    n, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"subframe side {h}x{w} is not a multiple of the block {block}")
    return x.reshape(n, h // block, block, w // block, block).mean(axis=(2, 4)).reshape(n, -1)


def cnn_features(subframes: np.ndarray, classifier: Any) -> np.ndarray:
    """Penultimate-layer activations ``(n, hidden)`` float32 of a `BlobClassifier`'s network
    (everything but its last layer, in eval mode)."""
    import torch

    from blobwatch.classifier import as_subframe_batch

    net = classifier.network
    head = net.classifier[:-1]
    batch = as_subframe_batch(subframes, classifier.size)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(batch), classifier.batch_size):
            chunk = torch.from_numpy(batch[start : start + classifier.batch_size, None]).to(classifier.device)
            parts.append(head(net.features(chunk)).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


@dataclass
class FeatureSet:
    """Features, labels and causes of the subframes of some cases (see `blobwatch.subframes`)."""

    features: dict[str, np.ndarray]
    label: np.ndarray
    cause: np.ndarray
    case: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def case_features(
    cases: Sequence[Case],
    kinds: Sequence[str],
    *,
    classifier: Any = None,
    registered: bool = False,
    clip_factor: float = 0.5,
    causes: bool = True,
    progress: bool = False,
) -> FeatureSet:
    """Features of the subframes of every case (the pixels are dropped case by case)."""
    from tqdm import tqdm

    from blobwatch.subframes import case_subframes

    bad = [k for k in kinds if k not in FEATURES]
    if bad:
        raise ValueError(f"unknown feature kind {bad[0]!r}; choose from {', '.join(FEATURES)}")
    if "cnn" in kinds and classifier is None:
        raise ValueError("cnn features need a classifier")
    feats: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    labels, names, index, offsets = [], [], [], []
    for k, case in enumerate(tqdm(cases, desc="features", unit="case", disable=not progress)):
        tiles, offs, lab, cause = case_subframes(
            case, registered=registered, clip_factor=clip_factor, causes=causes
        )
        case.release()
        for kind in kinds:
            feats[kind].append(raw_features(tiles) if kind == "raw" else cnn_features(tiles, classifier))
        labels.append(lab)
        names.append(cause)
        index.append(np.full(len(lab), k))
        offsets.append(offs)
    if not labels:
        raise ValueError("no cases")
    return FeatureSet(
        {k: np.concatenate(v) for k, v in feats.items()},
        np.concatenate(labels),
        np.concatenate(names),
        np.concatenate(index),
        np.concatenate(offsets),
    )


@dataclass
class Embedding:
    """Coordinates of the training subframes and of each other set, and what it took."""

    method: str
    feature: str
    train: np.ndarray
    others: list[np.ndarray]
    seconds: float
    model: Any = field(default=None, repr=False)  # scaler and fitted PCA/UMAP (None for t-SNE)


def embed(
    train: np.ndarray,
    others: Sequence[np.ndarray],
    method: str,
    *,
    feature: str = "",
    dims: int = 2,
    seed: int = 0,
) -> Embedding:
    """Embed standardized features (fitted on ``train``) in ``dims`` dimensions.

    Raises
    ------
    blobwatch.extras.MissingExtraError
        ``umap`` without umap-learn installed.
    """
    from sklearn.preprocessing import StandardScaler

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    t0 = time.perf_counter()
    scaler = StandardScaler().fit(train)
    z_train = scaler.transform(train).astype(np.float32)
    z_others = [scaler.transform(o).astype(np.float32) for o in others]
    model: Any = None
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=dims, random_state=seed).fit(z_train)
        out_train, out_others = pca.transform(z_train), [pca.transform(o) for o in z_others]
        model = (scaler, pca)
    elif method == "umap":
        from blobwatch.extras import require

        umap = require("umap", package="umap-learn")
        reducer = umap.UMAP(n_components=dims, random_state=seed, n_neighbors=15, min_dist=0.1, n_jobs=1)
        out_train = reducer.fit_transform(z_train)
        out_others = [reducer.transform(o) for o in z_others]
        model = (scaler, reducer)
    else:
        from sklearn.manifold import TSNE

        stacked = np.concatenate([z_train, *z_others])
        perplexity = float(min(30.0, max(2.0, (len(stacked) - 1) / 3.0)))
        coords = TSNE(n_components=dims, init="pca", random_state=seed, perplexity=perplexity).fit_transform(
            stacked
        )
        bounds = np.cumsum([len(z_train)] + [len(o) for o in z_others])
        out_train, out_others = coords[: bounds[0]], [coords[a:b] for a, b in itertools.pairwise(bounds)]
    return Embedding(
        method,
        feature,
        np.asarray(out_train, np.float32),
        [np.asarray(o, np.float32) for o in out_others],
        time.perf_counter() - t0,
        model,
    )


def fit_classifier(coords: np.ndarray, labels: np.ndarray, kind: str = "logistic", *, k: int = 15) -> Any:
    """A scikit-learn classifier of blob (1) vs not (0) on embedded coordinates."""
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(class_weight="balanced", max_iter=1000).fit(coords, labels)
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=min(k, len(labels)), weights="distance").fit(coords, labels)
    raise ValueError(f"unknown classifier {kind!r}; choose from {', '.join(CLASSIFIERS)}")


def score_ranking(labels: np.ndarray, score: np.ndarray) -> dict[str, float | int | None]:
    """ROC AUC and average precision of ``score`` for ``labels`` (None when one class is absent)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    both = 0 < labels.sum() < len(labels)
    return {
        "n": len(labels),
        "positives": int(labels.sum()),
        "roc_auc": float(roc_auc_score(labels, score)) if both else None,
        "average_precision": float(average_precision_score(labels, score)) if both else None,
    }


@dataclass
class EmbeddingClassifier:
    """PCA of standardized features plus a logistic regression or kNN, as plain arrays.

    Attributes
    ----------
    feature : str
        'raw' or 'cnn' (features of the CNN file named in ``metadata["cnn_model"]``).
    kind : str
        'logistic' or 'knn'.
    arrays : dict of ndarray
        ``scale_mean``, ``scale_std``, ``pca_mean``, ``components``; logistic: ``coef``,
        ``intercept``; knn: ``points``, ``labels``, ``k``.
    metadata : dict
        Preparation, threshold, provenance, scores.
    """

    feature: str
    kind: str
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @classmethod
    def from_fitted(
        cls, embedding: Embedding, classifier: Any, kind: str, metadata: dict[str, Any]
    ) -> EmbeddingClassifier:
        """Arrays of a fitted PCA embedding and its classifier."""
        if embedding.method != "pca":
            raise ValueError("only a PCA embedding can be stored without pickle")
        scaler, pca = embedding.model
        arrays = {
            "scale_mean": scaler.mean_,
            "scale_std": scaler.scale_,
            "pca_mean": pca.mean_,
            "components": pca.components_,
        }
        if kind == "logistic":
            arrays |= {"coef": classifier.coef_, "intercept": classifier.intercept_}
        else:
            arrays |= {
                "points": classifier._fit_X,
                "labels": classifier._y.astype(np.int64),
                "k": np.array(classifier.n_neighbors),
            }
        return cls(
            embedding.feature,
            kind,
            {k: np.asarray(v, np.float64) if k != "labels" else v for k, v in arrays.items()},
            metadata,
        )

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Embedded coordinates of raw features."""
        a = self.arrays
        z = (np.asarray(features, np.float64) - a["scale_mean"]) / a["scale_std"]
        return (z - a["pca_mean"]) @ a["components"].T

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Blob probability of each subframe's features."""
        coords = self.transform(features)
        a = self.arrays
        if self.kind == "logistic":
            return (1.0 / (1.0 + np.exp(-(coords @ a["coef"].T + a["intercept"])[:, 0]))).astype(np.float32)
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=int(a["k"]), weights="distance").fit(a["points"], a["labels"])
        proba = knn.predict_proba(coords)
        return (
            proba[:, list(knn.classes_).index(1)].astype(np.float32)
            if 1 in knn.classes_
            else np.zeros(len(coords), np.float32)
        )

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (arrays plus the JSON header), atomically."""
        import io

        from blobwatch.atomic import write_bytes_atomic

        header = {"format": FORMAT, "feature": self.feature, "kind": self.kind, "metadata": self.metadata}
        buf = io.BytesIO()
        arrays: dict[str, Any] = {"header": np.array(json.dumps(header)), **self.arrays}
        np.savez(buf, **arrays)
        write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingClassifier:
        """Read a file written by `save` (no pickle).

        Raises
        ------
        InputError
            If it is missing or not an embedding classifier.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "embedding classifier file not found")
        try:
            with np.load(path, allow_pickle=False) as f:
                header = json.loads(str(f["header"]))
                arrays = {k: f[k] for k in f.files if k != "header"}
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(path, f"not a readable embedding classifier ({exc})") from None
        if header.get("format") != FORMAT:
            raise InputError(path, f"not an embedding classifier (expected format {FORMAT!r})")
        return cls(header["feature"], header["kind"], arrays, header.get("metadata", {}))


def study(
    train: FeatureSet,
    others: dict[str, FeatureSet],
    *,
    methods: Sequence[str] = METHODS,
    features: Sequence[str] = FEATURES,
    classifiers: Sequence[str] = CLASSIFIERS,
    dims: int = 2,
    seed: int = 0,
    log: Any = print,
) -> tuple[list[dict[str, Any]], list[Embedding]]:
    """Every embedding of every feature kind, every classifier on it, scored on each set of
    ``others`` (name -> features).

    Returns
    -------
    results : list of dict
        One per (method, feature, classifier): ``seconds`` (embedding + fit) and, per set name,
        `score_ranking` of the classifier's probability; the fitted objects under ``"_fitted"``.
    embeddings : list of Embedding
        One per (method, feature), the coordinates of the figures.
    """
    names = list(others)
    results, embeddings = [], []
    for feature in features:
        for method in methods:
            emb = embed(
                train.features[feature],
                [others[n].features[feature] for n in names],
                method,
                feature=feature,
                dims=dims,
                seed=seed,
            )
            embeddings.append(emb)
            log(f"{method} of {feature} features: {emb.seconds:.1f} s")
            for kind in classifiers:
                t0 = time.perf_counter()
                clf = fit_classifier(emb.train, train.label, kind)
                fit = time.perf_counter() - t0
                row: dict[str, Any] = {
                    "method": method,
                    "feature": feature,
                    "classifier": kind,
                    "seconds": emb.seconds + fit,
                    "storable": method == "pca",
                }
                for name, coords in zip(names, emb.others, strict=True):
                    proba = (
                        clf.predict_proba(coords)[:, list(clf.classes_).index(1)]
                        if 1 in clf.classes_
                        else np.zeros(len(coords))
                    )
                    row[name] = score_ranking(others[name].label, proba)
                row["_fitted"] = (emb, clf)
                results.append(row)
    return results, embeddings


def best_storable(results: Sequence[dict[str, Any]], select_on: str = "calibration") -> dict[str, Any]:
    """The storable (PCA) result with the highest average precision on ``select_on``."""
    storable = [
        r for r in results if r["storable"] and r.get(select_on, {}).get("average_precision") is not None
    ]
    if not storable:
        raise ValueError(f"no storable embedding classifier could be scored on {select_on!r}")
    return max(storable, key=lambda r: r[select_on]["average_precision"])


@dataclass
class EmbeddingDetector:
    """The stored embedding classifier as a regression-suite detector, on the seed's protocol:
    the 16 subframes of the (plain or registered, as it was fitted) difference; score = blob
    probability; a flagged subframe is a box."""

    model: str | None = None
    cnn_model: str | None = None
    device: str = "cpu"
    name: str = "embed"
    localizes: bool = False
    description: str = "classifier on a PCA embedding of subframes"
    _clf: Any = field(default=None, init=False, repr=False)
    _cnn: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._clf = EmbeddingClassifier.load(
            self.model if self.model is not None else shipped_embedding_path()
        )
        meta = self._clf.metadata
        self.native_threshold = float(meta.get("threshold", 0.5))
        self.registered = bool(meta.get("registered", False))
        self.clip_factor = float(meta.get("clip_factor", 0.5))
        self.description = (
            f"{self._clf.kind} classifier on a {meta.get('dims', 2)}-D PCA of "
            f"{self._clf.feature} subframe features (seed's subframe protocol)"
        )
        if self._clf.feature == "cnn":
            from blobwatch.classifier import BlobClassifier

            self._cnn = BlobClassifier(self.cnn_model or meta.get("cnn_model"), device=self.device)

    def __call__(self, case: Case) -> Candidates:
        from blobwatch.subframes import case_subframes

        tiles, offsets, _, _ = case_subframes(
            case, registered=self.registered, clip_factor=self.clip_factor, causes=False
        )
        feats = raw_features(tiles) if self._clf.feature == "raw" else cnn_features(tiles, self._cnn)
        prob = self._clf.predict_proba(feats).astype(float)
        size = tiles.shape[-1]
        boxes = np.column_stack([offsets[:, 0], offsets[:, 1], np.full(len(offsets), size)]).astype(float)
        return Candidates(boxes[:, 0] + size / 2, boxes[:, 1] + size / 2, prob, boxes)
