import numpy as np
import pytest
import torch

import tidian
from tidian import ConfigError, create_model, measure_cost


def test_cost_of_a_known_mlp_is_exact(vector_task):
    model = create_model("mlp", vector_task, hidden=[8, 4])
    cost = measure_cost(model, vector_task, repeats=30, warmup=3, batch_size=32)
    weights = 5 * 8 + 8 * 4 + 4 * 3
    assert cost.params == weights + 8 + 4 + 3
    assert cost.nonzero_params == cost.params
    assert cost.flops == 2 * weights and cost.macs == weights  # matrix products only
    # safetensors: the float32 data plus a JSON header of a few hundred bytes
    data = (cost.params + 2 * 3) * 4  # + the head's shift/scale buffers
    assert data < cost.size_bytes < data + 2048


def test_nonzero_counts_pruned_weights(vector_task):
    model = create_model("mlp", vector_task, hidden=[8])
    with torch.no_grad():
        model.blocks[0][0].weight[:4] = 0
    cost = measure_cost(model, vector_task, repeats=10, warmup=1, batch_size=8)
    assert cost.params - cost.nonzero_params == 4 * 5


def test_measured_latency_and_throughput_are_sane(tiny_tasks):
    task = tiny_tasks["sequence"]
    small = measure_cost(create_model("mlp", task, hidden=[8]), task, repeats=50, batch_size=64)
    big = measure_cost(
        create_model("gru", task, hidden=128, depth=2), task, repeats=50, batch_size=64
    )
    for cost in (small, big):
        assert 0 < cost.latency_ms <= cost.latency_p95_ms < 1000
        assert cost.throughput > 0 and cost.threads == 1
    assert big.latency_ms > small.latency_ms  # 2-layer GRU over 12 steps vs one tiny layer
    assert big.flops > 100 * small.flops


def test_recurrent_and_attention_flops_are_counted(tiny_tasks):
    task = tiny_tasks["sequence"]  # 12 steps of 2 channels
    lstm = measure_cost(create_model("lstm", task, hidden=4), task, repeats=5, warmup=1)
    per_step = 4 * 4 * (2 + 4)  # four gates, each (input + hidden) x hidden
    assert lstm.macs == 12 * per_step + 4 * 3
    tf = measure_cost(create_model("transformer", task, width=8, heads=2), task, repeats=5)
    assert tf.macs > 2 * 12 * 8 * 8 * 4  # at least the q/k/v/out projections of 2 layers


def test_thread_count_is_restored(vector_task):
    before = torch.get_num_threads()
    measure_cost(create_model("linear", vector_task), vector_task, repeats=5, threads=2)
    assert torch.get_num_threads() == before


def test_cost_bad_arguments(vector_task):
    model = create_model("linear", vector_task)
    with pytest.raises(ConfigError, match="repeats"):
        measure_cost(model, vector_task, repeats=0)
    with pytest.raises(ConfigError, match="at least one sample"):
        measure_cost(model, np.zeros((0, 5), np.float32))
    assert tidian.count_parameters(model) == 5 * 3 + 3
