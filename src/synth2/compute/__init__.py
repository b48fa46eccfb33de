"""Scale-out: the heavy stages' inference sharded over Ray actors, training on several torch DDP processes.

    shards.py      how rows are split into shards and each shard's seed (the split, not the engine,
                   decides the output), and `ShardPool`, the splitting and joining every engine shares
    pool.py        `shard_pool`: run a stage's inference shard by shard, in the stage's process or on Ray
    ray_pool.py    the Ray engine: one actor per worker, its model loaded once, shards handed out as
                   workers free up, one-line errors naming the cluster or the worker
    ray_cluster.py connecting to (or starting) Ray, what workers need to run the workspace's code
    torchrun.py    a training stage relaunched on `compute.train_processes` processes with torchrun;
                   the DDP side of the one training loop is synth2.models.ddp

Params: the `compute` section of params.yaml (synth2.params.ComputeParams); README "Scaling out".
"""
