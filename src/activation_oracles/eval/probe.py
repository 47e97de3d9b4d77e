"""Logistic-regression probes on the very activations the oracle reads: the white-box reference."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

MIN_TRAIN = 8


def pool(vectors) -> np.ndarray:
    """[N, D] features: the mean of each example's K source vectors."""
    return np.stack([v.float().mean(0).cpu().numpy() for v in vectors])


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(y.tolist())) < 2:
        return None  # one class only: predict it
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(x, y)


def probe_predictions(train_x, train_y, train_keys, test_x, test_keys) -> np.ndarray:
    """Predicted yes (1) / no (0) per test example, from one probe per key.

    A key is what makes "yes" mean one thing: (layer, asked class). The oracle is asked a question
    about a class; the matching probe is trained to answer that same question from the activation.
    Keys with too few training examples fall back to the majority answer of their training rows.
    """
    by_key = defaultdict(list)
    for i, k in enumerate(train_keys):
        by_key[k].append(i)
    preds = np.zeros(len(test_keys), dtype=np.int64)
    test_by_key = defaultdict(list)
    for i, k in enumerate(test_keys):
        test_by_key[k].append(i)
    for k, idx in test_by_key.items():
        tr = by_key.get(k, [])
        if not tr:
            continue
        y = train_y[tr]
        model = _fit(train_x[tr], y) if len(tr) >= MIN_TRAIN else None
        if model is None:
            preds[idx] = int(round(float(y.mean())))
        else:
            preds[idx] = model.predict(test_x[idx])
    return preds
