"""The run layer: what training, evaluation and the bench share about one run.

- :mod:`~fewstep.run.components`: a recipe's components (dataset, interpolant, network, flow map,
  objective, sampler) built through the registries, and the device;
- :mod:`~fewstep.run.rundir`: run directories (finding, creating, resuming, loading a trained run);
- :mod:`~fewstep.run.checkpoint`: checkpoint files (weights as safetensors, resumable state);
- :mod:`~fewstep.run.records`: the run's ``metrics.jsonl``;
- :mod:`~fewstep.run.dist`: this process's place among torchrun's.

Imports run one way: maths and data -> run -> train, eval -> api -> bench -> cli. Nothing here imports
train or eval.
"""
