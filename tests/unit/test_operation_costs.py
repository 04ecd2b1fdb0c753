"""The benchmark's cost counter: each operation's FLOPs and bytes, counted by hand here."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from operation_costs import CARDS, Operation, OperationCosts

FP16 = 2


def test_a_linear_layer_is_one_matrix_product_reading_input_weight_and_bias_and_writing_its_output():
    x, weight, bias = torch.randn(6, 4), torch.randn(3, 4), torch.randn(3)
    with OperationCosts() as costs:
        torch.nn.functional.linear(x, weight, bias)
    assert costs.operations == [Operation("aten.addmm", flops=2 * 6 * 4 * 3, bytes=FP16 * (6 * 4 + 3 * 4 + 3 + 6 * 3))]


def test_a_broadcast_operand_counts_once_and_views_count_nothing():
    x, table = torch.randn(5, 4, 3), torch.randn(1, 4, 3)
    with OperationCosts() as costs:
        y = x.view(20, 3).transpose(0, 1)  # views: no operation
        x + table
        y.reshape(-1)  # a transposed tensor cannot be flattened as a view: one copy
    assert costs.operations == [Operation("aten.add", 0, FP16 * (60 + 12 + 60)),
                                Operation("aten.clone", 0, FP16 * (60 + 60))]


def attention_costs(inference: bool) -> OperationCosts:
    with FakeTensorMode(), torch.inference_mode(inference):
        q, kv = torch.empty(2, 8, 16, 40), torch.empty(2, 8, 32, 40)
        mask = torch.zeros(16, 32)
        with OperationCosts() as costs:
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
    return costs


def test_attention_is_counted_whole_on_fake_tensors_on_any_device():
    """On a CPU torch's FlopCounterMode counts 0 for attention; here it is 4·B·H·L·S·E whatever the kernel."""
    (op,) = attention_costs(inference=True).operations
    assert op == Operation("aten.scaled_dot_product_attention", flops=4 * 2 * 8 * 16 * 32 * 40,
                           bytes=FP16 * (2 * 8 * 16 * 40 + 2 * (2 * 8 * 32 * 40) + 16 * 32 + 2 * 8 * 16 * 40))
    (cpu_kernel,) = attention_costs(inference=False).operations  # autograd hands us the CPU kernel instead
    assert cpu_kernel.flops == op.flops


def test_roofline_time_is_the_slower_of_the_arithmetic_and_the_memory_traffic():
    flops_per_s, bytes_per_s = CARDS["H100 SXM"]
    costs = OperationCosts()
    costs.operations = [Operation("matrix product", flops=10 ** 12, bytes=10 ** 6),
                        Operation("add", flops=0, bytes=10 ** 9), Operation("add", flops=0, bytes=10 ** 9)]
    assert costs.flops == 10 ** 12
    assert costs.roofline_seconds("H100 SXM") == 10 ** 12 / flops_per_s + 2 * (10 ** 9 / bytes_per_s)
    assert costs.roofline_seconds_by_operation("H100 SXM") == {"matrix product": 10 ** 12 / flops_per_s,
                                                               "add": 2 * (10 ** 9 / bytes_per_s)}
