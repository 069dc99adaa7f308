"""One predictor whose demos are retrieved per input: the k most similar examples of a demo pool.

DSPy's `KNNFewShot` does this by patching `forward` at compile time, which neither saves nor serves.
Here the pool is the predictor's own `demos` (whatever the optimiser left there: `optimizer=labeled_fewshot`
with a large `k` puts the whole train split in), so `program.json` carries it like any demos, and the
index (TF-IDF by default, any sklearn-style vectoriser) is rebuilt from it, deterministically, at first
use after loading. A served model therefore picks the same demos, and answers, as the benchmark did.

    >>> program = RetrievedDemos(contract.to_dict(), k=8)                # doctest: +SKIP
    >>> program.predict.demos = trainset                                 # the pool (an optimiser sets it)
    >>> with dspy.context(lm=lm):                                        # doctest: +SKIP
    ...     program(text="my card still hasn't come").label
    'card_arrival'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args, get_origin

import dspy
import numpy as np

from pipelines.data.contract import Contract, as_contract


def tfidf(analyzer: str = "char_wb", ngram_range: Sequence[int] = (2, 5), sublinear_tf: bool = True, **kwargs):
    """scikit-learn's TF-IDF vectoriser from config values (YAML gives lists; sklearn wants a tuple).

    Character n-grams within word bounds: short, typo-ridden customer messages share stems more than
    whole words ("card hasn't arrived" / "my cards arrival")."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=analyzer, ngram_range=tuple(ngram_range), sublinear_tf=sublinear_tf, **kwargs)


class RetrievedDemos(dspy.Module):
    """`k` nearest pool examples (cosine similarity of the inputs' vectors) as the demos of each call.

    `nearest_last`: the most similar demo sits right before the input, where a small model looks most.
    `restrict_labels`: each Literal (label) output may only take the values its retrieved demos show,
    through the schema grammar: the LM chooses among the neighbours' labels, never outside them (the
    0.5B model answered a label none of its 8 demos had on 1 row in 20, mostly wrongly).
    """

    def __init__(
        self,
        signature: Contract | Mapping,
        k: int = 8,
        vectorizer=None,
        instructions: str | None = None,
        nearest_last: bool = True,
        restrict_labels: bool = False,
    ):
        super().__init__()
        contract = as_contract(signature)
        self.predict = dspy.Predict(contract.signature(instructions))
        self.k = int(k)
        self.nearest_last = nearest_last
        self.restrict_labels = restrict_labels
        self.input_names = contract.input_names
        self.vectorizer = vectorizer if vectorizer is not None else tfidf()
        self._index: tuple | None = None  # (the pool it was built from, its vectors, its size, the vectorizer)

    def _text(self, values: Mapping) -> str:
        return " | ".join(str(values.get(name, "")) for name in self.input_names)

    def _fitted(self, pool: list) -> tuple:
        """(the pool's vectors, the vectorizer fitted on it), rebuilt when the optimiser (or `load`) replaces the
        pool or it grows in place. Each build fits its own copy of the vectorizer and the index is set in one
        assignment: a thread reading the last index never sees a vectorizer another thread is refitting."""
        index = self._index
        if index is None or index[0] is not pool or index[2] != len(pool):
            from sklearn.base import clone

            vectorizer = clone(self.vectorizer)
            matrix = vectorizer.fit_transform([self._text(demo) for demo in pool])
            index = self._index = (pool, matrix, len(pool), vectorizer)
        return index[1], index[3]

    def _vectors(self, pool: list):
        return self._fitted(pool)[0]

    def nearest(self, query, exclude: int | None = None) -> list[int]:
        """Pool positions of the `k` rows most similar to `query` (a vector row, or the inputs), nearest first;
        `exclude`: a pool position left out (a pool row's own neighbours, without itself)."""
        pool = self.predict.demos
        if not pool or self.k <= 0:
            return []
        matrix, vectorizer = self._fitted(pool)
        if isinstance(query, Mapping):
            query = vectorizer.transform([self._text(query)])
        scores = np.asarray((matrix @ query.T).todense()).ravel()  # TF-IDF rows are L2-normalised: cosine
        if exclude is not None:
            scores[exclude] = -np.inf
        # Stable sort on -score: ties keep pool order, so the choice never depends on the platform.
        return [int(i) for i in np.argsort(-scores, kind="stable")[: self.k]]

    def retrieve(self, inputs: Mapping) -> list:
        """The `k` pool examples most similar to `inputs`, least similar first (or first, see `nearest_last`)."""
        pool = self.predict.demos
        chosen = [pool[i] for i in self.nearest(inputs)]
        return chosen[::-1] if self.nearest_last else chosen

    def narrowed(self, demos: list):
        """The signature with each Literal output cut to the values `demos` show (None: nothing to cut)."""
        signature, changed = self.predict.signature, False
        for name, field in self.predict.signature.output_fields.items():
            if get_origin(field.annotation) is not Literal:
                continue
            seen = {str(demo.get(name)) for demo in demos}
            allowed = get_args(field.annotation)
            keep = tuple(value for value in allowed if str(value) in seen)
            if keep and len(keep) < len(allowed):
                signature, changed = signature.with_updated_fields(name, type_=Literal[keep]), True
        return signature if changed else None

    def ask(self, inputs: Mapping, demos: list) -> dspy.Prediction:
        """The LM's answer to `inputs` with `demos` (the schema cut to their labels under `restrict_labels`)."""
        signature = self.narrowed(demos) if self.restrict_labels else None
        extra = {"signature": signature} if signature is not None else {}
        return self.predict(**inputs, demos=demos, **extra)

    def forward(self, **inputs) -> dspy.Prediction:
        return self.ask(inputs, self.retrieve(inputs))
