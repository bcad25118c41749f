"""Golden values for the MoE router, dispatch and load-balancing loss, computed by hand."""

import math

import torch

from automoe.moe import MoEFeedForward, load_balancing_loss, router_probabilities, top1_moe, top_k_route

P_HI = 1 / (1 + math.exp(-1))  # softmax([1, 0])[0] = 0.7310585786...
P_LO = 1 - P_HI


def _layer() -> MoEFeedForward:
    """d=2; expert 0 (width 1): E0(x) = relu(x0 + x1) * [1, 2]; expert 1 (width 3):
    E1(x) = [relu(x0), relu(x1) + relu(x0 - x1)]; router R = I."""
    layer = MoEFeedForward(2, (1, 3), top_k=1)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        layer.router.weight.copy_(torch.eye(2))
        layer.experts[0].fc1.weight.copy_(torch.tensor([[1.0, 1.0]]))
        layer.experts[0].fc2.weight.copy_(torch.tensor([[1.0], [2.0]]))
        layer.experts[1].fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        layer.experts[1].fc2.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    return layer.eval()


X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])  # router logits [1,0], [0,1], [2,1]


def test_router_probabilities_and_choice():
    probs = router_probabilities(X, _layer().router)
    torch.testing.assert_close(probs, torch.tensor([[P_HI, P_LO], [P_LO, P_HI], [P_HI, P_LO]]))
    gates, experts = top_k_route(probs, 1)
    assert experts.view(-1).tolist() == [0, 1, 0]
    torch.testing.assert_close(gates.view(-1), torch.tensor([P_HI, P_HI, P_HI]))


def test_scaled_expert_outputs():
    out, loss, routing = _layer()(X.view(1, 3, 2))
    # tok0 -> E0([1,0]) = [1, 2]; tok1 -> E1([0,1]) = [0, 1]; tok2 -> E0([2,1]) = [3, 6]; each * P_HI
    expected = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 6.0]]) * P_HI
    torch.testing.assert_close(out.view(3, 2), expected)
    assert routing.view(-1).tolist() == [0, 1, 0]
    # f = [2/3, 1/3]; P = [(2 P_HI + P_LO)/3, (2 P_LO + P_HI)/3]; loss = 2 * sum f_i P_i
    golden = 2 * (2 / 3 * (2 * P_HI + P_LO) / 3 + 1 / 3 * (2 * P_LO + P_HI) / 3)
    torch.testing.assert_close(loss, torch.tensor(golden))
    assert abs(golden - 1.0513464) < 1e-6


def test_unscaled_and_top2():
    layer = _layer()
    layer.router_scale = False
    out, _, _ = layer(X.view(1, 3, 2))
    torch.testing.assert_close(out.view(3, 2), torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 6.0]]))
    layer = _layer()
    layer.top_k = 2
    out, _, _ = layer(X[:1].view(1, 1, 2))  # [1,0]: P_HI * E0 + P_LO * E1 = P_HI*[1,2] + P_LO*[1,1]
    torch.testing.assert_close(out.view(2), torch.tensor([P_HI + P_LO, 2 * P_HI + P_LO]))


def test_balancing_loss_masks_padding_and_bounds():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.0, 0.0, 1.0]])
    experts = probs.argmax(-1, keepdim=True)
    # all real tokens on expert 0: f = [1, 0, 0], P = [0.85, 0.15, 0] -> 3 * 0.85
    loss = load_balancing_loss(probs, experts, mask=torch.tensor([True, True, False]))
    torch.testing.assert_close(loss, torch.tensor(3 * 0.85))
    uniform = torch.full((6, 3), 1 / 3)
    balanced = torch.tensor([[0], [1], [2], [0], [1], [2]])
    torch.testing.assert_close(load_balancing_loss(uniform, balanced), torch.tensor(1.0))


def test_dense_layer_has_no_router():
    layer = MoEFeedForward(5, (7,))
    assert layer.router is None
    x = torch.randn(2, 3, 5)
    out, loss, routing = layer(x)
    torch.testing.assert_close(out, layer.experts[0](x))
    assert loss.item() == 0.0 and routing.eq(0).all()


def test_top1_moe_is_the_reference_layer():
    """`top1_moe`, which the layer and every exported form compute: the golden values above, the
    router probabilities and choices it routed by, and an expert no token chose is never called."""
    layer = _layer()
    called = []
    experts = [lambda x, e=e: called.append(e) or layer.experts[e](x) for e in range(2)]
    out, probs, choice = top1_moe(X, layer.router.weight, experts)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 6.0]]) * P_HI)
    torch.testing.assert_close(probs, router_probabilities(X, layer.router))
    assert choice.tolist() == [0, 1, 0] and called == [0, 1]
    out, _, _ = top1_moe(X[[0, 2]], layer.router.weight, experts, router_scale=False)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    assert called == [0, 1, 0]  # expert 1 got no token: not run
