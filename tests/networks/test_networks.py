"""fewstep.networks: NetworkSpec and the DiT sizes of DiT Table 1, importable without torch."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from fewstep.networks import DIT_SIZES, NetworkSpec


def test_dit_sizes_are_dit_table_1():
    # Peebles & Xie 2023, Table 1: (hidden size, layers, heads)
    assert DIT_SIZES == {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


@pytest.mark.parametrize("size", sorted(DIT_SIZES))
def test_every_dit_size_splits_into_heads_and_fits_the_2d_position_embedding(size):
    hidden, depth, heads = DIT_SIZES[size]
    assert hidden % heads == 0
    assert hidden % 4 == 0 and depth > 0


def test_network_spec_defaults_and_equality():
    spec = NetworkSpec((2,))
    assert (spec.shape, spec.num_classes, spec.second_time) == ((2,), None, True)
    assert NetworkSpec((3, 8, 8), 10, False) == NetworkSpec(shape=(3, 8, 8), num_classes=10, second_time=False)
    assert NetworkSpec((2,)) != NetworkSpec((2,), second_time=False)
    assert len({NetworkSpec((2,)), NetworkSpec((2,))}) == 1  # hashable


def test_network_spec_is_frozen():
    spec = NetworkSpec((2,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 3


def test_the_package_imports_without_torch():
    code = "import sys, fewstep.networks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
