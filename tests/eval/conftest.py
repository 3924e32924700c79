"""Fixtures of the evaluation tests: a feature extractor with closed-form features."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

LINEAR = "fewstep-test-linear"
_A = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, -0.5, 0.0]], dtype=torch.float64) / 10


@pytest.fixture(scope="module")
def linear_extractor():
    """A torch-fidelity extractor whose features are a fixed linear map A of the 2x2 pixels (float64),
    registered as ``name``: returns (name, A, the map of uint8 images to features)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class _Linear(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("lin",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "lin"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 2, 2, dtype=torch.uint8)

        def forward(self, x):
            return (x[:, 0].flatten(1).double() @ _A,)

    if LINEAR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(LINEAR, _Linear)
    return SimpleNamespace(name=LINEAR, A=_A, features=lambda u8: u8[:, 0].flatten(1).double() @ _A)
