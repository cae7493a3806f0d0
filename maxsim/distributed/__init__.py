"""Ray: ingest as a Ray Data pipeline (:class:`RayVideoEncoder`) and search sharded over Ray actors
(:class:`ShardedSearch`).

Install with ``pip install -e ".[ray]"`` from a maxsim checkout. The same code runs on a laptop (a local
Ray started on first use, or ``init(num_cpus=...)``) and on a cluster (``init(address="ray://...")`` or
``RAY_ADDRESS``). Neither module imports the engine: the engine composes them.
"""

from maxsim.distributed.cluster import gpus_per_worker, init, ray_module
from maxsim.distributed.ingest import RayVideoEncoder, worker_encoder
from maxsim.distributed.search import ShardedSearch, split_parts

__all__ = ["RayVideoEncoder", "ShardedSearch", "gpus_per_worker", "init", "ray_module", "split_parts",
           "worker_encoder"]
