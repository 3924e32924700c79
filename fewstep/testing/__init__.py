"""What plugin authors import in their own tests.

- Test doubles (:mod:`fewstep.testing.doubles`): :class:`ProbeNet`, a small deterministic backbone
  that records its calls, and :class:`RecordingFlowMap`, a flow map that records every f call, so a
  loss can be checked against a closed form computed from what the network actually saw.
- The conformance kit (:mod:`fewstep.testing.conformance`): one check per component kind (a kernel
  gives a symmetric Gram matrix with the right diagonal; a sampler calls the flow map exactly NFE
  times and keeps shapes; an objective's loss is finite, scalar and differentiable; Config models
  forbid unknown fields; ...), and :func:`conformance_cases` to run them over every registered
  component with pytest::

    import pytest
    from fewstep.testing import check_component, conformance_cases

    @pytest.mark.parametrize("entry", conformance_cases(plugin="my_plugin"))
    def test_conformance(entry):
        check_component(entry)

- Several processes (:mod:`fewstep.testing.distributed`): :func:`~fewstep.testing.distributed.torchrun_env`
  to launch torchrun from a test, and :func:`~fewstep.testing.distributed.assert_same_steps`, which checks
  that N gloo processes took the steps of one process accumulating N shards.
"""
from fewstep.testing.conformance import (
    check_component,
    check_config,
    check_dataset,
    check_interpolant,
    check_kernel,
    check_metric,
    check_network,
    check_objective,
    check_sampler,
    conformance_cases,
    tiny_recipe,
)
from fewstep.testing.doubles import ProbeNet, RecordingFlowMap, backbone_inputs, rng_draws

__all__ = [
    "ProbeNet", "RecordingFlowMap", "backbone_inputs", "rng_draws",
    "check_component", "check_config", "check_dataset", "check_interpolant", "check_kernel",
    "check_metric", "check_network", "check_objective", "check_sampler", "conformance_cases",
    "tiny_recipe",
]
