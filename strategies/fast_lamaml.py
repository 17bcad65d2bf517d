"""First-order La-MAML / C-MAML meta-gradients in closed form for ReLU MLPs.

With first-order meta-gradients the inner gradients g_k are constants, so the fast weights
``theta_{i+1} = theta_0 - r * sum_{k<=i} g_k`` have ``d theta_{i+1} / d theta_0 = I`` and
``d theta_{i+1} / d r = -sum_{k<=i} g_k``. For the meta-loss
``(1/n) sum_i L(B; theta_{i+1})`` (Gupta et al. 2020, Alg. 1 as in the official code):

- ``grad_theta = (1/n) sum_i grad L(B; theta_{i+1})``
- ``grad_r = (1/n) sum_i grad L(B; theta_{i+1}) * (-sum_{k<=i} g_k)``, times relu'(alpha) for alpha.

Every gradient of an MLP is written out (backpropagation by hand, batched over the
meta-batch), so no autograd graph is built through the inner loop. The result equals the
autograd path of :func:`strategies.lamaml.look_ahead_meta_loss` to float rounding (tested).
"""

from __future__ import annotations

import torch


def mlp_loss_and_grads(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                       mask_rows: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean cross-entropy of a ReLU MLP given as [W1, b1, W2, b2, ...] on a batch, and its
    gradients in the same order (closed form)."""
    n_layers = len(params) // 2
    acts = [x.reshape(len(x), -1)]
    h = acts[0]
    for i in range(n_layers):
        z = torch.addmm(params[2 * i + 1], h, params[2 * i].t())
        if i < n_layers - 1:
            h = z.clamp_(min=0)
            acts.append(h)
    logits = z if mask_rows is None else z + mask_rows
    logp = torch.log_softmax(logits, 1)
    loss = -logp.gather(1, y.view(-1, 1)).mean()
    d = logp.exp_()
    d[torch.arange(len(y)), y] -= 1.0
    d /= len(y)
    grads: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for i in range(n_layers - 1, -1, -1):
        grads[2 * i] = d.t() @ acts[i]
        grads[2 * i + 1] = d.sum(0)
        if i > 0:
            d = (d @ params[2 * i]).mul_(acts[i] > 0)
    return loss, grads


@torch.no_grad()
def first_order_meta_gradients(params: list[torch.Tensor], rates: list, incoming: tuple, meta_batch: tuple, *,
                               mask: torch.Tensor | None = None, with_rates: bool = True, after_inner_step=None,
                               final_only: bool = False):
    """(meta-loss, grad wrt params, grad wrt rates or None) of one glance, first order.

    ``params`` are [W1, b1, ...] of a ReLU MLP, ``rates`` the matching step sizes (tensors, or
    one float repeated: C-MAML's fixed rate), ``incoming`` the (x, y, t) examples taken one at a time in the inner loop and
    ``meta_batch`` the (x, y, t) of the meta-loss; ``final_only``: one meta-loss, after the
    last inner step (the paper's Algorithm 1), instead of one after every inner step."""
    x, y, t = incoming
    bx, by, bt = meta_batch
    meta_mask = None if mask is None else mask[bt]
    fast = [p.detach().clone() for p in params]
    summed = [torch.zeros_like(p) for p in params]  # sum_{k<=i} g_k
    g_theta = [torch.zeros_like(p) for p in params]
    g_rate = [torch.zeros_like(p) for p in params] if with_rates else None
    total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    scalar_rate = not torch.is_tensor(rates[0])
    n = len(y)
    for i in range(n):
        _, g = mlp_loss_and_grads(fast, x[i:i + 1], y[i:i + 1], None if mask is None else mask[t[i:i + 1]])
        if scalar_rate:  # one fixed rate (C-MAML)
            torch._foreach_add_(fast, g, alpha=-float(rates[0]))
        else:
            torch._foreach_addcmul_(fast, g, list(rates), value=-1.0)
        if with_rates:
            torch._foreach_add_(summed, g)
        if after_inner_step is not None:
            after_inner_step(i)
        if final_only and i < n - 1:
            continue
        loss, gm = mlp_loss_and_grads(fast, bx, by, meta_mask)
        total += loss
        torch._foreach_add_(g_theta, gm)
        if with_rates:
            torch._foreach_addcmul_(g_rate, gm, summed, value=-1.0)
    taken = 1 if final_only else n
    torch._foreach_div_(g_theta, taken)
    if with_rates:
        torch._foreach_div_(g_rate, taken)
    return total / taken, g_theta, g_rate
