"""Search: one typed request (:mod:`~maxsim.search.options`), the tokens placed where they are scored
(:mod:`~maxsim.search.corpus`), the allowed rows (:mod:`~maxsim.search.filters`), exact top-k
(:mod:`~maxsim.search.exact`), pruned search through the prune index (:mod:`~maxsim.search.prune`), hits
(:mod:`~maxsim.search.hits`), composed per snapshot by :class:`Searcher`. Search reads the index; it never
imports the encoders, media or ingest stages.
"""

from maxsim.search.corpus import Corpus, search_device
from maxsim.search.options import SearchOptions, check_search_options, default_candidates, default_refine
from maxsim.search.prune.searcher import PruneStats
from maxsim.search.result import SearchResult, SearchStats, sum_prune_stats
from maxsim.search.searcher import Searcher, prepare_queries, rows_to_global

__all__ = [
    "Corpus", "PruneStats", "SearchOptions", "SearchResult", "SearchStats", "Searcher",
    "check_search_options", "default_candidates", "default_refine", "prepare_queries", "rows_to_global",
    "search_device", "sum_prune_stats",
]
