"""Layernorm as a transformer block applies it, chunked into steps, with a linear head and a loss on top.

Exercise 6 asks for dx only, from the given dln, in one expression. B batch, T positions,
C channels (layernorm normalises each position's C channels), V classes of the head.
"""
# -- setup: the inputs, each marked param(...) (gets a gradient) or data(...) (does not) --
B, T, C, V = 4, 8, 16, 11
x = param(torch.randn(B, T, C) * 2.0 + 0.5)  # (B, T, C) the residual stream entering the block
ln_w = param(1.0 + 0.1 * torch.randn(C))  # (C,) gain, near 1 (init 1 would hide a missing factor)
ln_b = param(0.1 * torch.randn(C))  # (C,) bias
W = param(torch.randn(C, V) / C**0.5)  # (C, V) a head, so that dln is not uniform
Y = data(torch.randint(0, V, (B, T)))  # (B, T) targets
# -- forward --
xmean = x.mean(-1, keepdim=True)  # (B, T, 1) mean over the channels of each position
xdiff = x - xmean  # (B, T, C)
xdiff2 = xdiff**2  # (B, T, C)
xvar = xdiff2.mean(-1, keepdim=True)  # (B, T, 1) biased (1/C), as nn.LayerNorm; no Bessel here
rstd = (xvar + 1e-5)**-0.5  # (B, T, 1) reciprocal standard deviation
xhat = xdiff * rstd  # (B, T, C) zero mean, unit variance per position
ln = xhat * ln_w + ln_b  # (B, T, C) ln_w and ln_b broadcast over B and T
logits = ln @ W  # (B, T, V)
loss = F.cross_entropy(logits.view(-1, V), Y.view(-1))  # ()
