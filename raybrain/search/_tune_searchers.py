"""Small wrappers around Tune's search algorithms for trial mode (imports Ray; load lazily).

* :class:`Numbered` stamps each suggested config with ``trial_index`` 0, 1, 2… in suggestion
  order and keeps the count across a resume (Tune saves wrapper state through
  ``get_state``/``set_state``). Tune names trials of a ``Searcher`` with random ids, so without it a
  trial's number — its record file and its noise streams — would not be reproducible.
* :class:`SeededNevergrad` seeds the nevergrad optimizer that ``NevergradSearch`` builds (Tune
  has no seed argument for it).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.nevergrad import NevergradSearch

INDEX = "trial_index"


class Numbered(Searcher):
    """``searcher``'s suggestions, each with ``config[INDEX]`` = its suggestion number."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self.count = 0
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: Dict, **spec) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> Optional[Dict]:
        out = self.searcher.suggest(trial_id)
        if out is None or out == Searcher.FINISHED:
            return out
        out = dict(out)
        out[INDEX] = self.count
        self.count += 1
        return out

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> Dict:
        return {"count": self.count}

    def set_state(self, state: Dict) -> None:
        self.count = int(state.get("count", self.count))

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class SeededNevergrad(NevergradSearch):
    """``NevergradSearch`` whose optimizer draws from ``numpy.random.RandomState(seed)``."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        self._seed = int(seed)
        super().__init__(*args, **kwargs)

    def _setup_nevergrad(self):
        super()._setup_nevergrad()
        if self._nevergrad_opt is not None:
            self._nevergrad_opt.parametrization.random_state = np.random.RandomState(self._seed)
